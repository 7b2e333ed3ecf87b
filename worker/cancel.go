package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/xygroup/xygroup/worker/contract"
	"github.com/xygroup/xygroup/xylink"
)

// Cancelling a command before it is sent. A cancel is one compare-and-swap on
// the command's record (idempotency.cancel) that succeeds only while no request
// for it may have taken effect: no terminal event, no call past its Sent mark
// without an answer, no earlier call of unknown outcome. markSent, written
// before every request, refuses a cancelled record, and both are writes of the
// same key at known revisions: whichever is first, the other fails. So a
// cancelled command is never sent, and a command whose request may have left is
// never reported cancelled.
const (
	SubjectCancel         = contract.SubjectCancel
	SubjectCancelRejected = contract.SubjectCancelRejected
	TypeCancelRejected    = contract.TypeCancelRejected
)

// errCancelled: the command's record says it was cancelled; no request goes.
var errCancelled = errors.New("command cancelled")

// cancelMark is a cancel stored in the command's record.
type cancelMark struct {
	Reason   string    `json:"reason,omitempty"`
	CancelID string    `json:"cancelId,omitempty"`
	At       time.Time `json:"at"`
}

// cancel marks the command cancelled unless a request for it may have taken
// effect, or it is done: then it says why not (contract.Rejected*), and the record is
// left as it is. A command without a record gets one, marked: published after
// its cancel (within the bucket's TTL), it ends cancelled. A command cancelled
// already stays cancelled by the first cancel. While an expiry is ending the
// command it fails with errBusy: the cancel is tried again after it.
func (s *idempotency) cancel(ctx context.Context, ref commandRef, m cancelMark) (rejected string, rec commandRecord, err error) {
	rec, _, err = s.apply(ctx, ref, nil, 0, cancelT(m, &rejected))
	if err != nil {
		return "", rec, err
	}
	return rejected, rec, nil
}

// cancelledEvent is a cancelled command's terminal event.
func cancelledEvent(d *Decoded, m *cancelMark, attempts int, now time.Time) *outEvent {
	why := "cancelled before any request for it could take effect"
	if m.Reason != "" {
		why += ": " + m.Reason
	}
	ev := failedEvent(d, failure{class: xylink.ClassCancelled, userMessage: string(xylink.ClassCancelled),
		developerMessage: why}, attempts, now)
	body := ev.body.(*FailedEvent)
	body.Reason, body.CancelID = cutJSONString(m.Reason, maxMessageBytes), m.CancelID
	return ev
}

// cancelledVerdict ends a command whose record says it was cancelled.
func (p *pipeline) cancelledVerdict(ctx context.Context, a *attempt) verdict {
	rec, _, err := p.idem.get(ctx, a.d.ref())
	if err != nil {
		return retryIn(time.Second)
	}
	if rec.Terminal != nil {
		return repeatEvent(rec.Terminal.repeatFor(a.d))
	}
	if rec.Cancelled == nil {
		return retryIn(100 * time.Millisecond) // a replay took the cancel back meanwhile
	}
	a.log.Info().Str("cancelId", rec.Cancelled.CancelID).Msg("cancelled before it was sent")
	return endWith(cancelledEvent(a.d, rec.Cancelled, rec.Attempts, p.now()))
}

// unlessCancelled: a command about to be parked on its first delivery has not
// read its record (intake skips that read), so a cancel that came before the
// command is looked up here: it ends now instead of waiting for its meeting.
func (p *pipeline) unlessCancelled(ctx context.Context, a *attempt, v verdict) verdict {
	if !v.parks() || a.d == nil || a.d.Invalid != nil || a.recRev != 0 {
		return v
	}
	rec, _, err := p.idem.get(ctx, a.d.ref())
	if err != nil || rec.Cancelled == nil || rec.Terminal != nil {
		return v
	}
	return endWith(cancelledEvent(a.d, rec.Cancelled, rec.Attempts, p.now()))
}

// cancelTarget is a command a cancel names, and where it was found parked.
type cancelTarget struct {
	ref     commandRef
	meeting string
	parked  []*jetstream.RawStreamMsg
}

// maxCancelIDBytes bounds a cancel's id taken from its Nats-Msg-Id; a longer
// one is replaced by the cancel's place in the stream.
const maxCancelIDBytes = 200

// handleCancel carries out a cancel from the shared consumer. Each named
// command not sent yet is marked cancelled in its record; its parked copies
// end at once (failed.cancelled, removed from the parked stream), a queued
// one when its delivery comes (the record ends it before any request). Each
// command that could not be cancelled is answered on SubjectCancelRejected.
// The cancel is acknowledged only once all of that is stored.
func (w *Worker) handleCancel(ctx context.Context, msg jetstream.Msg, meta *jetstream.MsgMetadata, log zerolog.Logger) {
	cancelID := msg.Headers().Get(nats.MsgIdHdr)
	if cancelID == "" || len(cancelID) > maxCancelIDBytes { // it is stored in records and answers
		cancelID = ""
	}
	if cancelID == "" {
		cancelID = meta.Stream + ":" + strconv.FormatUint(meta.Sequence.Stream, 10)
	}
	log = log.With().Str("cancelId", cancelID).Logger()
	var c contract.Cancel
	err := json.Unmarshal(msg.Data(), &c)
	// The reason is stored in the command's record beside its terminal event
	// and quoted in every answer: bounded as the events' messages are, so
	// that neither outgrows what NATS carries.
	c.Reason = cutJSONString(c.Reason, maxMessageBytes)
	if c.EnterpriseID == "" {
		c.EnterpriseID = w.opts.defaultEnterprise
	}
	if err == nil && (c.CommandID == "") == (c.MeetingRoomNumber == "") {
		err = errors.New("a cancel names a commandId or a meetingRoomNumber, one of them")
	}
	if err == nil {
		err = cancelIDsTooLong(c)
	}
	if err != nil {
		log.Warn().Err(err).Msg("invalid cancel")
		ans := contract.CancelRejected{CancelID: cancelID, Reason: contract.RejectedInvalid, CancelReason: c.Reason,
			DeveloperMessage: "invalid cancel: " + err.Error()}
		ans.CommandID, ans.EnterpriseID, ans.MeetingRoomNumber = cutJSONString(c.CommandID, maxCancelCommandID),
			cutJSONString(c.EnterpriseID, maxCancelEnterpriseID), cutJSONString(c.MeetingRoomNumber, maxCancelMeeting)
		if w.answerCancel(ctx, msg, meta, ans) {
			w.ack(ctx, &msgSettler{msg: msg}, log)
		}
		return
	}
	mark := cancelMark{Reason: c.Reason, CancelID: cancelID, At: w.opts.now()}
	targets, err := w.cancelTargets(ctx, c, meta.Sequence.Stream)
	if err != nil {
		log.Warn().Err(err).Msg("cancel: reading the commands it names; retrying")
		_ = msg.NakWithDelay(time.Second)
		return
	}
	var ended []*jetstream.RawStreamMsg
	defer func() { w.prober.forgetEmptied(ctx, ended) }()
	for _, t := range targets {
		tlog := log.With().Str("commandId", t.ref.id).Str("enterpriseId", t.ref.enterprise).Logger()
		rejected, rec, err := w.p.idem.cancel(ctx, t.ref, mark)
		if err != nil {
			tlog.Warn().Err(err).Msg("cancel not recorded; retrying")
			_ = msg.NakWithDelay(time.Second)
			return
		}
		if rejected != "" {
			ans := contract.CancelRejected{CancelID: cancelID, Reason: rejected, CancelReason: c.Reason,
				DeveloperMessage: rejectedMessage(rejected)}
			ans.CommandID, ans.EnterpriseID, ans.MeetingRoomNumber, ans.Attempts = t.ref.id, t.ref.enterprise, t.meeting, rec.Attempts
			if rec.Terminal != nil {
				ans.Outcome = rec.Terminal.Subject
				var id contract.Identity
				if json.Unmarshal(rec.Terminal.Body, &id) == nil && ans.MeetingRoomNumber == "" {
					ans.MeetingRoomNumber = id.MeetingRoomNumber
				}
			}
			if !w.answerCancel(ctx, msg, meta, ans) {
				return
			}
			w.opts.metrics.Cancels.WithLabelValues("rejected").Inc()
			tlog.Info().Str("why", rejected).Msg("cancel rejected")
			continue
		}
		if c.CommandID != "" {
			if err := w.parkedCopies(ctx, t, rec); err != nil {
				tlog.Warn().Err(err).Msg("cancel: reading its parked copies; retrying")
				_ = msg.NakWithDelay(time.Second)
				return
			}
		}
		w.opts.metrics.Cancels.WithLabelValues("cancelled").Inc()
		tlog.Info().Int("parked", len(t.parked)).Msg("cancelled")
		m := rec.Cancelled
		for _, pm := range t.parked {
			del := parkedDelivery(pm.Data, pm.Header, 0, fromProbe, pm.Sequence, pm.Time)
			d := w.p.decoder.decode(del.data, del.header, del.stream, del.seq, time.Time{})
			d.ReplayID = del.replayMark(&tlog)
			w.apply(ctx, endWith(cancelledEvent(d, m, rec.Attempts, w.opts.now())), d, del,
				&probeSettler{stream: w.parked, seq: pm.Sequence}, tlog)
			ended = append(ended, pm)
		}
	}
	w.ack(ctx, &msgSettler{msg: msg}, log)
}

// The longest ids a cancel may name (schemas/cancel.schema.json), in characters.
const (
	maxCancelCommandID    = 200
	maxCancelMeeting      = 64
	maxCancelEnterpriseID = 128
)

// cancelIDsTooLong: a cancel naming ids longer than a command may have names
// none; its answer quotes them cut.
func cancelIDsTooLong(c contract.Cancel) error {
	for _, f := range []struct {
		name, v string
		max     int
	}{{"commandId", c.CommandID, maxCancelCommandID}, {"meetingRoomNumber", c.MeetingRoomNumber, maxCancelMeeting},
		{"enterpriseId", c.EnterpriseID, maxCancelEnterpriseID}} {
		if n := utf8.RuneCountInString(f.v); n > f.max {
			return fmt.Errorf("%s of %d characters, more than %d", f.name, n, f.max)
		}
	}
	return nil
}

func rejectedMessage(why string) string {
	switch why {
	case contract.RejectedDone:
		return "the command already has its terminal event"
	case contract.RejectedInFlight:
		return "a request for the command is at XYLink now; its outcome follows as its terminal event"
	}
	return "a request for the command may have been sent; it is not cancelled"
}

// answerCancel publishes a cancel_rejected answer; on failure the cancel is
// returned for a later try, and it reports false.
func (w *Worker) answerCancel(ctx context.Context, msg jetstream.Msg, meta *jetstream.MsgMetadata, ans contract.CancelRejected) bool {
	// One answer per cancel and command, whatever the cancel's redeliveries.
	id := "xygroup.cancel_rejected." + meta.Stream + "." + strconv.FormatUint(meta.Sequence.Stream, 10) + "." +
		scopedID(commandRef{enterprise: ans.EnterpriseID, id: ans.CommandID})
	ans.EventID, ans.OccurredAt = eventID(id), w.opts.now().UTC()
	ev := &outEvent{subject: SubjectCancelRejected, ceType: TypeCancelRejected, msgID: id, eventID: ans.EventID, body: &ans}
	if _, err := w.publish(ctx, ev, msg.Headers().Get("traceparent")); err != nil {
		w.log.Warn().Err(err).Msg("cancel answer not published; retrying")
		_ = msg.NakWithDelay(time.Second)
		return false
	}
	return true
}

// cancelTargets lists the commands a cancel names (seq: the cancel's place in
// the commands stream): its command, found through its record (the waiting
// meeting it was parked under), or every command of its meeting published
// before the cancel, parked (under the meeting, the tenant's hold or its
// lane) or queued. A cancel by meeting never touches a command published
// after it, wherever that command is by the time the cancel is carried out.
func (w *Worker) cancelTargets(ctx context.Context, c contract.Cancel, seq uint64) ([]*cancelTarget, error) {
	var out []*cancelTarget
	byRef := map[commandRef]*cancelTarget{}
	add := func(ref commandRef, meeting string) *cancelTarget {
		t := byRef[ref]
		if t == nil {
			t = &cancelTarget{ref: ref, meeting: meeting}
			byRef[ref] = t
			out = append(out, t)
		}
		return t
	}
	if c.CommandID != "" {
		// Its parked copies are found through its record once the cancel is
		// in it (parkedCopies).
		add(commandRef{enterprise: c.EnterpriseID, id: c.CommandID}, "")
		return out, nil
	}
	mine := func(d *Decoded, stream string, at uint64) bool {
		return d.Invalid == nil && d.EnterpriseID == c.EnterpriseID && d.MeetingRoomNumber == c.MeetingRoomNumber &&
			publishedBefore(stream, at, seq)
	}
	// The consumer's ack floor is read before the parked stream: a command
	// parked (and so acknowledged) meanwhile is then in one or the other.
	cons, err := w.js.Consumer(ctx, StreamCommands, ConsumerWorkers)
	if err != nil {
		return nil, err
	}
	info, err := cons.Info(ctx)
	if err != nil {
		return nil, err
	}
	floor := info.AckFloor.Stream
	for _, subj := range []string{parkedSubject(meetingToken(c.EnterpriseID, c.MeetingRoomNumber)),
		parkedSubject(holdToken(c.EnterpriseID)), parkedSubject(laneToken(c.EnterpriseID))} {
		err := w.scanParked(ctx, subj, func(m *jetstream.RawStreamMsg, d *Decoded) {
			if del := parkedDelivery(m.Data, m.Header, 0, fromProbe, m.Sequence, m.Time); mine(d, del.stream, del.seq) {
				t := add(d.ref(), d.MeetingRoomNumber)
				t.parked = append(t.parked, m)
			}
		})
		if err != nil {
			return nil, err
		}
	}
	// Queued: delivered or not, not acknowledged yet (the consumer's ack
	// floor bounds what is settled), and published before the cancel.
	if floor+1 >= seq {
		return out, nil
	}
	r, err := contract.NewReader(ctx, w.js, contract.ReadOptions{Stream: StreamCommands, Subjects: []string{SubjectCreate, SubjectReplay},
		StartSeq: floor + 1, Batch: 1})
	if err != nil {
		return nil, err
	}
	for m, err := range r.Messages(ctx) {
		if err != nil {
			return nil, err
		}
		mm := m.Meta()
		if mm == nil {
			continue
		}
		if mm.Sequence.Stream >= seq {
			break
		}
		if d := w.p.decoder.decode(m.Data(), m.Headers(), mm.Stream, mm.Sequence.Stream, time.Time{}); mine(d, mm.Stream, mm.Sequence.Stream) {
			add(d.ref(), d.MeetingRoomNumber)
		}
	}
	return out, nil
}

// publishedBefore: a command that first arrived at (stream, seq) was
// published before the cancel at cancelSeq of the commands stream. One that
// did not come through the commands stream (parked by something else) has
// no place to compare: it is not taken for the cancel's.
func publishedBefore(stream string, seq, cancelSeq uint64) bool {
	return stream == StreamCommands && seq < cancelSeq
}

// parkedCopies finds a cancelled command's parked copy through its record,
// which names its place in the parked stream (under a waiting meeting or its
// tenant's hold). The record is read after the cancel was written in it: a
// park records its place there after storing its copy, so either the park
// came first and its copy is found here, or the park meets the cancel in the
// record and ends the command itself (Worker.recordParked). A copy in the
// tenant's lane meets the cancel when its turn comes, as a queued one does.
func (w *Worker) parkedCopies(ctx context.Context, t *cancelTarget, rec commandRecord) error {
	if rec.ParkedSeq == 0 {
		return nil
	}
	m, err := w.parked.GetMsg(ctx, rec.ParkedSeq)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil // taken and settled meanwhile
	}
	if err != nil {
		return err
	}
	if m.Subject != parkedSubject(rec.ParkedUnder) {
		return nil
	}
	del := parkedDelivery(m.Data, m.Header, 0, fromProbe, m.Sequence, m.Time)
	if d := w.p.decoder.decode(del.data, del.header, del.stream, del.seq, time.Time{}); d.ref() == t.ref {
		t.meeting = d.MeetingRoomNumber
		t.parked = append(t.parked, m)
	}
	return nil
}

// scanParked calls f with every message parked under subj, decoded.
func (w *Worker) scanParked(ctx context.Context, subj string, f func(*jetstream.RawStreamMsg, *Decoded)) error {
	for next := uint64(1); ; {
		m, err := w.parked.GetMsg(ctx, next, jetstream.WithGetMsgSubject(subj))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		next = m.Sequence + 1
		del := parkedDelivery(m.Data, m.Header, 0, fromProbe, m.Sequence, m.Time)
		f(m, w.p.decoder.decode(del.data, del.header, del.stream, del.seq, time.Time{}))
	}
}

// isCancelled: the event ends a cancelled command; no API answer came.
func isCancelled(ev *outEvent) bool {
	return ev != nil && ev.subject == SubjectFailed+"."+string(xylink.ClassCancelled)
}
