package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"go.opentelemetry.io/otel/trace"

	"github.com/xygroup/xygroup/xylink"
)

// probeLease is how long a claimed probe is its claimant's: long enough for a
// limiter wait and a call; if the claimant dies, another replica probes after it.
const probeLease = time.Minute

// prober probes waiting meetings and held tenants: one parked command of the
// meeting (or hold) at a time, by the replica that claimed the meeting's
// record, and it releases the meeting when the API answers. Every replica has
// one. Its commands are settled as every delivery of the replica is (apply),
// in their own spans (startCommand), on the replica's work context, which
// outlives a stop by the drain timeout.
type prober struct {
	opts     *options
	log      zerolog.Logger
	p        *pipeline
	parker   *parker
	releaser *releaser

	apply        func(ctx context.Context, v verdict, d *Decoded, del *delivery, s settler, log zerolog.Logger)
	startCommand func(ctx context.Context, del *delivery) (context.Context, trace.Span)
	work         func() context.Context

	// forgetChecked, when set, runs between a forget's check that the meeting
	// has no parked command and its delete (tests).
	forgetChecked func(token string)
}

// claim takes the due probe of a waiting meeting as this replica's view saw
// it (e), for probeLease.
func (pr *prober) claim(ctx context.Context, token string, e meetingEntry) bool {
	now := pr.opts.now()
	_, err := applyMeetingAt(ctx, pr.parker.meetings, token, &e.rec, e.rev,
		meetingChange{event: evClaim, now: now, lease: now.Add(probeLease)})
	return err == nil
}

// probeOutcome is what a probe leaves to do with the meeting's record: release
// the meeting, forget it (nothing is parked any more), or schedule the next
// probe; each gives the claim up.
type probeOutcome struct {
	release, forget bool
	next            time.Time
	countProbe      bool
}

// probe tries one parked command of the meeting and reschedules or releases it.
//
// ctx is the replica's run: it ends on SIGTERM. The probe's own work (its
// call, its event) runs on the worker's work context, as commands in flight do,
// so that a stopping replica lets a probe call finish within the drain timeout
// instead of cutting it off after its request was written (which would leave
// the command's outcome unknown). Whatever ends the probe (an answer, the drain
// timeout, a panic), the claim is given back with a context that outlives the
// stop: another replica probes at once, not after the claim's lease.
func (pr *prober) probe(ctx context.Context, token string) {
	log := pr.log.With().Str("meeting", token).Logger()
	out := probeOutcome{next: pr.opts.now()} // aborted before a decision: probe again at once
	defer func() {
		if r := recover(); r != nil {
			log.Error().Interface("panic", r).Msg("probe panicked; its command stays parked")
			out = probeOutcome{next: pr.opts.now().Add(5 * time.Second)}
		}
		switch {
		case out.release:
			pr.release(ctx, token, log)
		case out.forget && pr.forgetMeeting(ctx, token):
		default:
			pr.reschedule(ctx, token, out.next, out.countProbe)
		}
	}()
	out = pr.runProbe(pr.work(), token, &log)
}

func (pr *prober) runProbe(ctx context.Context, token string, log *zerolog.Logger) probeOutcome {
	now := pr.opts.now()
	r, _, err := readMeeting(ctx, pr.parker.meetings, token)
	if err != nil || r == nil {
		return probeOutcome{next: now.Add(time.Second)}
	}
	rec := *r
	meetingLog := *log // a command's lines name it, its tenant and meeting (commandLogger)
	*log = log.With().Str("enterpriseId", rec.EnterpriseID).Str("meetingRoomNumber", rec.Meeting).Logger()
	if !now.Before(rec.EarliestDeadline) {
		pr.expireParked(ctx, token, rec, meetingLog)
	}
	cand, empty, nextNotBefore, err := pr.probeCandidate(ctx, token, now)
	switch {
	case err != nil:
		log.Warn().Err(err).Msg("probe: reading parked commands")
		return probeOutcome{next: now.Add(time.Second)}
	case empty:
		return probeOutcome{forget: true, next: now}
	case cand == nil:
		return probeOutcome{next: nextNotBefore}
	}
	del := parkedDelivery(cand.Data, cand.Header, rec.Probes+1, fromProbe, cand.Sequence, cand.Time)
	*log = meetingLog
	ctx, span := pr.startCommand(ctx, del)
	defer span.End()
	v, d := pr.p.process(ctx, del, log)
	settle := &probeSettler{stream: pr.parker.parked, seq: cand.Sequence}
	if rec.Kind == kindHold && v.waiting {
		// The API answered (66620): the tenant's breaker is closed, and this
		// command goes on to wait for its meeting.
		v = pr.parker.toMeeting(v)
	}
	pr.apply(ctx, v, d, del, settle, *log)
	pr.opts.metrics.Probes.WithLabelValues(probeResult(v)).Inc()
	switch {
	case v.meetingAnswer || (rec.Kind == kindHold && (v.parks() || (v.ends() && !isCancelled(v.event)))):
		return probeOutcome{release: true}
	case v.kind == doGiveBack:
		return probeOutcome{next: now} // given up (stopping): another replica probes at once
	case rec.Kind == kindHold:
		next := now.Add(max(v.retry, time.Second))
		if until, open := pr.p.breaker.Open(rec.EnterpriseID); open {
			next = until
		}
		return probeOutcome{next: next, countProbe: true}
	case v.waiting:
		return probeOutcome{next: now.Add(pr.probeDelay(rec)), countProbe: true}
	case v.ends():
		return probeOutcome{next: now} // that one is done; probe another at once
	default:
		return probeOutcome{next: now.Add(max(v.retry, time.Second))}
	}
}

func probeResult(v verdict) string {
	switch {
	case v.meetingAnswer:
		return "answered"
	case v.waiting:
		return "not_started"
	case v.ends():
		return "ended"
	}
	return "no_news"
}

// probeEvery is the least time between two probes of a meeting after its
// first (unless --probe-max-interval is shorter): fewer than one probe per
// waiting meeting per 10 s on average.
const probeEvery = 10 * time.Second

// probeDelay is the time to a waiting meeting's next probe: its backoff,
// stretched when the enterprise has so many meetings waiting that probing each
// at that pace would take more than the probe share of its rate; then they are
// spread evenly (±10%) over the time the share allows for all of them.
func (pr *prober) probeDelay(rec meetingRecord) time.Duration {
	d := pr.parker.backoff.Delay(rec.Probes + 1)
	if floor := min(probeEvery, pr.parker.backoff.Max); rec.Probes >= 1 && d < floor {
		// After its first probe, a meeting is probed at most once per
		// probeEvery (less when the backoff's cap is lower).
		d = time.Duration(float64(floor) * (1 + 0.1*rand.Float64()))
	}
	n := 0
	for _, e := range pr.parker.view.all() {
		if e.rec.State == meetingWaiting && e.rec.Kind != kindHold && e.rec.EnterpriseID == rec.EnterpriseID {
			n++
		}
	}
	perSecond := pr.opts.probeShare * pr.opts.rateOf(rec.EnterpriseID)
	if perSecond <= 0 {
		return d
	}
	spread := time.Duration(float64(n) / perSecond * float64(time.Second))
	if spread > d {
		d = time.Duration(float64(spread) * (0.9 + 0.2*rand.Float64()))
	}
	return d
}

// probeCandidate finds the oldest parked command of the meeting that may be sent
// now (its notBefore passed). empty: the meeting has no parked command at all.
func (pr *prober) probeCandidate(ctx context.Context, token string, now time.Time) (*jetstream.RawStreamMsg, bool, time.Time, error) {
	var nextNotBefore time.Time
	seq := uint64(1)
	for i := 0; i < 100; i++ {
		m, err := pr.parker.parked.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(parkedSubject(token)))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			break
		}
		if err != nil {
			return nil, false, time.Time{}, err
		}
		var peek struct {
			NotBefore *time.Time `json:"notBefore"`
		}
		_ = json.Unmarshal(m.Data, &peek)
		if peek.NotBefore == nil || !now.Before(*peek.NotBefore) {
			return m, false, time.Time{}, nil
		}
		if nextNotBefore.IsZero() || peek.NotBefore.Before(nextNotBefore) {
			nextNotBefore = *peek.NotBefore
		}
		seq = m.Sequence + 1
	}
	if nextNotBefore.IsZero() {
		return nil, seq == 1, time.Time{}, nil
	}
	return nil, false, nextNotBefore, nil
}

// recordCtx is for the writes that give a probe claim up: they must land even
// when ctx ended (the replica is stopping), or the meeting would wait out the
// claim's lease.
func recordCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
}

// reschedule sets the next probe and gives up the lease; countProbe adds
// one to the meeting's probes.
func (pr *prober) reschedule(ctx context.Context, token string, next time.Time, countProbe bool) {
	ctx, cancel := recordCtx(ctx)
	defer cancel()
	_, err := applyMeeting(ctx, pr.parker.meetings, token, meetingChange{event: evReschedule, now: pr.opts.now(),
		next: next, countProbe: countProbe})
	if err != nil && !refused(err) { // refused: released, or forgotten meanwhile
		pr.log.Warn().Err(err).Str("meeting", token).Msg("reschedule probe")
	}
}

// release marks the meeting released; every replica then lets out its parked
// commands (this one only while ctx lasts).
func (pr *prober) release(ctx context.Context, token string, log zerolog.Logger) {
	now := pr.opts.now()
	rctx, cancel := recordCtx(ctx)
	defer cancel()
	r, err := applyMeeting(rctx, pr.parker.meetings, token, meetingChange{event: evRelease, now: now})
	if err != nil {
		log.Warn().Err(err).Msg("release meeting")
		return
	}
	log.Info().Int("probes", r.Probes).Dur("waited", now.Sub(r.WaitingSince)).Msg("meeting answered; releasing its parked commands")
	if ctx.Err() == nil {
		pr.releaser.start(ctx, token)
	}
}

// forgetMeeting deletes the record of a waiting meeting (or hold) that has no
// parked command left, and reports whether it did. The caller holds the
// meeting's probe claim.
func (pr *prober) forgetMeeting(ctx context.Context, token string) bool {
	return pr.forget(ctx, token, true)
}

// forgetIdle is forgetMeeting for a replica that holds no claim: a meeting
// whose probe is claimed is left to its claimant, which forgets it once its
// probe finds nothing parked.
func (pr *prober) forgetIdle(ctx context.Context, token string) bool {
	return pr.forget(ctx, token, false)
}

// forget deletes a waiting meeting's record when nothing is parked under it.
//
// A park stores its command, then writes the record (schedule counts every
// park); a forget reads the record at revision rev, finds the meeting's
// parked subject empty, then deletes at rev. A park concurrent with a forget
// either stored its command before the check (the check sees it: no delete),
// or wrote the record after the read (the delete at rev fails), or writes it
// after the delete (it creates the record anew). No parked command is left
// without a record.
func (pr *prober) forget(ctx context.Context, token string, claimant bool) bool {
	ctx, cancel := recordCtx(ctx)
	defer cancel()
	r, rev, err := readMeeting(ctx, pr.parker.meetings, token)
	if err != nil || r == nil {
		return false
	}
	c := meetingChange{event: evForget, now: pr.opts.now(), claimant: claimant}
	if _, err := meetingRow(r, c); err != nil {
		return false // a lane's record is its owner's to delete (closeLane), a released one its releasers' (letOut)
	}
	if _, empty, _, err := pr.probeCandidate(ctx, token, c.now); err != nil || !empty {
		return false
	}
	if pr.forgetChecked != nil {
		pr.forgetChecked(token)
	}
	_, err = applyMeetingAt(ctx, pr.parker.meetings, token, r, rev, c)
	return err == nil
}

// forgetEmptied forgets the waiting meetings and holds whose parked commands
// were among msgs (a cancel's), once none is left under them: a meeting
// without commands is not shown waiting until a probe far ahead.
func (pr *prober) forgetEmptied(ctx context.Context, msgs []*jetstream.RawStreamMsg) {
	done := map[string]bool{}
	for _, m := range msgs {
		token := strings.TrimPrefix(m.Subject, subjectParked+".")
		if !done[token] {
			done[token] = true
			pr.forgetIdle(ctx, token)
		}
	}
}

// expireParked ends the meeting's parked commands whose deadline passed, as
// failed.meeting_not_started, and records the earliest deadline left.
func (pr *prober) expireParked(ctx context.Context, token string, rec meetingRecord, meetingLog zerolog.Logger) {
	now := pr.opts.now()
	earliest := now.Add(100 * 365 * 24 * time.Hour)
	seq := uint64(1)
	for {
		m, err := pr.parker.parked.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(parkedSubject(token)))
		if err != nil {
			break
		}
		seq = m.Sequence + 1
		del := parkedDelivery(m.Data, m.Header, 0, fromProbe, m.Sequence, m.Time)
		settle := func(v verdict, d *Decoded, log zerolog.Logger) {
			ctx, span := pr.startCommand(ctx, del)
			defer span.End()
			pr.apply(ctx, v, d, del, &probeSettler{stream: pr.parker.parked, seq: m.Sequence}, log)
		}
		d := pr.p.decoder.decode(del.data, del.header, del.stream, del.seq, time.Time{})
		log := commandLogger(meetingLog, d)
		d.ReplayID = del.replayMark(&log)
		if d.Invalid != nil {
			// Not a command: it can never be sent, whatever its deadline.
			l := meetingLog
			v, d := pr.p.process(ctx, del, &l)
			settle(v, d, l)
			continue
		}
		deadline := pr.p.deadlineOf(d, del)
		if now.Before(deadline) {
			earliest = minTime(earliest, deadline)
			continue
		}
		// The expiry claims the record as a call does: a command whose call
		// is in flight (a release or a probe let it out meanwhile) is left to
		// its call's answer, and no call begins while its event is stored.
		cr, err := pr.p.idem.expire(ctx, d.ref(), deadline)
		var v verdict
		switch {
		case errors.Is(err, errDone):
			v = repeatEvent(cr.Terminal.repeatFor(d))
		case errors.Is(err, errCancelled):
			v = endWith(cancelledEvent(d, cr.Cancelled, cr.Attempts, now))
		case err != nil:
			var busy errBusy
			if !errors.As(err, &busy) {
				log.Warn().Err(err).Msg("expiry: command record not claimed; trying at the next probe")
			}
			// Looked at again once the call in flight has ended or the time
			// to reconcile has passed, and at least every expiryRecheck: the
			// call may end well before its lease.
			earliest = minTime(earliest, minTime(now.Add(expiryRecheck), maxTime(deadline, busy.until)))
			continue
		case rec.Kind == kindHold:
			f := failureOf(xylink.ClassUnavailable, cr.lastError(ErrBreakerOpen))
			f.developerMessage = fmt.Sprintf("deadline %s passed while the enterprise's commands were held (its API kept failing, or it refused the credentials): %s",
				deadline.UTC().Format(time.RFC3339), f.developerMessage)
			v = endWith(failedEvent(d, f, cr.Attempts, now))
		default:
			status := 0
			if cr.Last != nil && cr.Last.ErrorCode == xylink.CodeNoMeeting {
				status = cr.Last.HTTPStatus
			}
			v = endWith(failedEvent(d, failure{class: xylink.ClassMeetingNotStarted, errorCode: xylink.CodeNoMeeting,
				httpStatus: status, userMessage: "error.no.meeting",
				developerMessage: fmt.Sprintf("the meeting had not started by the deadline %s (%d probes of the meeting, %d calls for this command)%s",
					deadline.UTC().Format(time.RFC3339), rec.Probes, cr.Attempts, unknownNote(cr))}, cr.Attempts, now))
		}
		settle(v, d, log)
	}
	_, _ = applyMeeting(ctx, pr.parker.meetings, token, meetingChange{event: evSetEarliest, now: now,
		earliest: earliest, parksSeen: rec.Parks})
}

// unknownNote says, in a failure without a call of its own, that an earlier
// request's outcome is unknown.
func unknownNote(r commandRecord) string {
	if r.MaybeCreated {
		return "; an earlier request's outcome is unknown (it timed out or its connection was lost)"
	}
	return ""
}

// expiryRecheck bounds how long an expiry waits before it looks again at a
// passed deadline it could not act on (a call in flight, an outcome being
// reconciled).
const expiryRecheck = 5 * time.Second

func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

// probeSettler settles a probed command: done removes it from the parked stream;
// otherwise it stays parked.
type probeSettler struct {
	stream jetstream.Stream
	seq    uint64
	// gone: the copy was removed already, by whoever settled it first (a
	// cancel, an expiry, its release), which gave its bytes back.
	gone bool
}

func (s *probeSettler) ack(ctx context.Context) error {
	err := s.stream.DeleteMsg(ctx, s.seq)
	if msgGone(err) {
		s.gone = true
		return nil
	}
	return err
}

// msgGone reports a delete that found no message: the server answers
// 10057 "no message found" (the API error's code is lost in nats.go's
// wrapping), not ErrMsgNotFound.
func msgGone(err error) bool {
	return err != nil && (errors.Is(err, jetstream.ErrMsgNotFound) || strings.Contains(err.Error(), "no message found"))
}

func (s *probeSettler) removedBefore() bool     { return s.gone }
func (s *probeSettler) nak(time.Duration) error { return nil }
