package worker

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/xygroup/xygroup/worker/record"
)

// BucketCommands holds one record per commandId: how many calls were made, whether
// one is in flight, whether an earlier call's outcome is unknown, and the terminal
// event once there is one. It outlives the commands stream (30 days by default),
// so a command published again long after it completed is still recognised.
// Package record reads it for tools, and holds its key scheme.
const BucketCommands = record.Bucket

// commandRecord is the idempotency record of one command.
type commandRecord struct {
	Attempts int `json:"attempts"`
	// PendingUntil: a call is in flight (or its worker died) until then. Another
	// worker waits; after it, the call's outcome is unknown.
	PendingUntil time.Time `json:"pendingUntil,omitzero"`
	// MaybeCreated: an earlier call may have created the groups (timeout, lost
	// connection, crash while sending). A later 66684 means it did.
	MaybeCreated bool `json:"maybeCreated,omitempty"`
	// Sent is the last attempt whose request may have gone out.
	Sent int `json:"sent,omitempty"`
	// Last is the last answer of the API for this command, so that a command that
	// ends later (deadline, open breaker) still states why.
	Last *lastAnswer `json:"last,omitempty"`
	// ReplayID: the replay that last tried the command again after a failure.
	ReplayID string `json:"replayId,omitempty"`
	// Waiting: the waiting event was published.
	Waiting bool `json:"waiting,omitempty"`
	// Terminal is the command's terminal event, once published, and EventSeq
	// its sequence in the events stream (0 in records written before it was
	// kept), so that a reader gets the event as published with one get.
	Terminal *storedEvent `json:"terminal,omitempty"`
	EventSeq uint64       `json:"eventSeq,omitempty"`
	// Cancelled: a cancel came before any request for the command could
	// leave; it ends as failed.cancelled and is never sent (cancel.go).
	Cancelled *cancelMark `json:"cancelled,omitempty"`
	// EndingUntil: a terminal event without a call (an expiry) is being
	// stored until then; no call begins meanwhile.
	EndingUntil time.Time `json:"endingUntil,omitzero"`
	// ParkedUnder and ParkedSeq: where the command was last parked (the
	// waiting meeting's or the hold's token, and its place in the parked
	// stream), so that a cancel by its id finds the copy without a scan.
	ParkedUnder string `json:"parkedUnder,omitempty"`
	ParkedSeq   uint64 `json:"parkedSeq,omitempty"`
}

type lastAnswer struct {
	HTTPStatus       int    `json:"httpStatus,omitempty"`
	ErrorCode        int    `json:"errorCode,omitempty"`
	UserMessage      string `json:"userMessage,omitempty"`
	DeveloperMessage string `json:"developerMessage,omitempty"`
}

// storedEvent is enough to publish an event again, identically.
type storedEvent struct {
	Subject string          `json:"subject"`
	CEType  string          `json:"ceType"`
	MsgID   string          `json:"msgId"`
	EventID string          `json:"eventId"`
	Body    json.RawMessage `json:"body"`
	// CommandOmitted: Body is a failed event whose command is left out (it
	// says so as a command cut to nothing, with its SHA-256): the handling
	// that publishes it again has the command, and puts it back. Records
	// written before quote the command in Body.
	CommandOmitted bool `json:"commandOmitted,omitempty"`
}

// storedFor is what a command's record keeps of its terminal event ev, published
// as body: a failed event without the command it quotes, which would double
// the record's size (up to 4/3 of the command in Base64); any other as published.
func storedFor(ev *outEvent, body []byte) (*storedEvent, error) {
	s := &storedEvent{Subject: ev.subject, CEType: ev.ceType, MsgID: ev.msgID, EventID: ev.eventID, Body: body}
	f, ok := ev.body.(*FailedEvent)
	if !ok {
		return s, nil
	}
	slim := f.withoutCommand()
	b, err := marshalEvent(&slim)
	if err != nil {
		return nil, err
	}
	s.Body, s.CommandOmitted = b, true
	return s, nil
}

func (s *storedEvent) outEvent() *outEvent {
	return &outEvent{subject: s.Subject, ceType: s.CEType, msgID: s.MsgID, eventID: s.EventID, body: rawBody(s.Body)}
}

// repeatFor is the stored terminal event, published again for this handling
// of the command d: a replay's copy gets the replay's own Nats-Msg-Id, so that
// the replay learns the outcome it asked about (a created command is not sent
// again) instead of waiting for an event the stream drops as a duplicate. An
// event stored without its command gets d's back when d is the command it
// quoted (the same SHA-256), and is shaped as it was when first published; a
// different command under the same id leaves it as stored, naming the
// original by its hash.
func (s *storedEvent) repeatFor(d *Decoded) *outEvent {
	ev := s.outEvent()
	if d.ReplayID != "" {
		ev.msgID = terminalID(d)
	}
	if !s.CommandOmitted {
		return ev
	}
	var f FailedEvent
	if json.Unmarshal(s.Body, &f) != nil {
		return ev
	}
	if sum := sha256.Sum256(d.Raw); hex.EncodeToString(sum[:]) == f.CommandSHA256 {
		f.Command, f.CommandEncoding = originalCommand(d.Raw)
		f.CommandTruncated, f.CommandSHA256, f.raw = false, "", d.Raw
		ev.body = &f
	}
	return ev
}

// rawBody is an already encoded event body.
type rawBody json.RawMessage

// idempotency reads and writes command records with compare-and-swap.
type idempotency struct {
	kv jetstream.KeyValue
	// legacy: the bucket holds records of an earlier version's keys.
	legacy bool
	lease  time.Duration // a call's own time, beyond the client's timeout
	// grantWait: the longest a begun call waits for its rate-limit grant; the
	// record says "in flight" for grantWait + lease.
	grantWait time.Duration
	now       func() time.Time
}

// commandRef names a command within its tenant: two enterprises may use the same
// commandId without meeting each other's record or events.
type commandRef struct {
	enterprise string
	id         string
}

func (d *Decoded) ref() commandRef { return commandRef{enterprise: d.EnterpriseID, id: d.ID} }

// commandKey maps a command to its KV key (record.Key).
func commandKey(r commandRef) string { return record.Key(r.enterprise, r.id) }

// legacyKeysPresent reports whether the bucket holds records under the keys of
// earlier versions (c.*, h.*). Only then does a command without a record look
// there, so that one created before an upgrade is still not sent again.
func legacyKeysPresent(ctx context.Context, js jetstream.JetStream) (bool, error) {
	st, err := js.Stream(ctx, "KV_"+BucketCommands)
	if err != nil {
		return false, err
	}
	for _, f := range []string{"c.>", "h.>"} {
		_, err := st.GetLastMsgForSubject(ctx, "$KV."+BucketCommands+"."+f)
		if err == nil {
			return true, nil
		}
		if !errors.Is(err, jetstream.ErrMsgNotFound) {
			return false, err
		}
	}
	return false, nil
}

// initial is the record a command starts from when its key has none: empty, or
// carried over from the record of an earlier version, which did not name the
// tenant. A terminal one is carried over only if its event is this tenant's;
// one with a call in flight or an unknown outcome is carried over without its
// last API answer (a rare commandId shared by two tenants at the upgrade errs
// on the side of not sending twice, and no tenant reads another's answer).
func (s *idempotency) initial(r commandRef) func(context.Context) (*commandRecord, error) {
	return func(ctx context.Context) (*commandRecord, error) {
		if !s.legacy {
			return &commandRecord{}, nil
		}
		e, err := s.kv.Get(ctx, record.LegacyKey(r.id))
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			return &commandRecord{}, nil
		}
		if err != nil {
			return nil, err
		}
		var old commandRecord
		if err := json.Unmarshal(e.Value(), &old); err != nil {
			return &commandRecord{}, nil // unreadable: as if there were none
		}
		if old.Terminal != nil {
			if !record.TerminalIsTenants(old.Terminal.Body, r.enterprise) {
				return &commandRecord{}, nil
			}
			return &old, nil
		}
		// Not terminal: nothing says whose it is. What keeps a command from
		// being sent twice is carried over; the last API answer, which may be
		// another tenant's, is not (it would be quoted in this tenant's events).
		old.Last = nil
		return &old, nil
	}
}

// intake returns the record a delivery starts from. A command's first
// delivery from the commands stream is taken to have none, without a read:
// begin's write then creates the record, and a record that exists after all
// (the same command published again after the stream's duplicate window)
// makes that create fail, and is read and acted on there (its terminal event
// published again, or a call in flight waited for).
func (s *idempotency) intake(ctx context.Context, r commandRef, firstDelivery bool) (commandRecord, uint64, error) {
	if firstDelivery && !s.legacy {
		return commandRecord{}, 0, nil
	}
	return s.get(ctx, r)
}

// get returns the record and its revision (0 when there is none).
func (s *idempotency) get(ctx context.Context, r commandRef) (commandRecord, uint64, error) {
	e, err := s.kv.Get(ctx, commandKey(r))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		init, err := s.initial(r)(ctx)
		if err != nil {
			return commandRecord{}, 0, fmt.Errorf("idempotency record: %w", err)
		}
		return *init, 0, nil
	}
	if err != nil {
		return commandRecord{}, 0, fmt.Errorf("idempotency record: %w", err)
	}
	var rec commandRecord
	if err := json.Unmarshal(e.Value(), &rec); err != nil {
		return commandRecord{}, 0, fmt.Errorf("idempotency record %s: %w", r.id, err)
	}
	return rec, e.Revision(), nil
}

// apply makes one transition of the record (commandstate.go) with
// compare-and-swap, from the record as last read (known at knownRev; 0 with
// an empty known: read it first), and returns the record and its revision as
// written (0 when the transition wrote nothing).
func (s *idempotency) apply(ctx context.Context, ref commandRef, known *commandRecord, knownRev uint64, t transition) (commandRecord, uint64, error) {
	change := func(r *commandRecord) (bool, error) { return t.change(r, s.now()) }
	var (
		rec commandRecord
		rev uint64
		err error
	)
	if known != nil {
		rec, rev, err = casUpdateKnown(ctx, s.kv, commandKey(ref), *known, knownRev, s.initial(ref), change)
	} else {
		rec, rev, err = casUpdateFrom(ctx, s.kv, commandKey(ref), s.initial(ref), change)
	}
	if err != nil && !isTransitionRefusal(err) {
		err = fmt.Errorf("idempotency record (%s): %w", t.name, err)
	}
	return rec, rev, err
}

// isTransitionRefusal: the table refused the move (not an I/O error).
func isTransitionRefusal(err error) bool {
	return errors.Is(err, errDone) || errors.Is(err, errCancelled) || isBusy(err) ||
		errors.Is(err, errLostClaim) || errors.Is(err, errRequestOut)
}

func isBusy(err error) bool {
	var b errBusy
	return errors.As(err, &b)
}

// errBusy: another worker's call (or ending) for the command is in progress.
type errBusy struct{ until time.Time }

func (e errBusy) Error() string { return "another worker is calling for this command" }

// claim is a begun call: the time until which it is this replica's, and the
// record as written, so that marking it sent is one compare-and-swap.
type claim struct {
	until   time.Time
	attempt int
	record  commandRecord
	rev     uint64
}

// begin marks a call as in flight and returns the record as it was before (with
// MaybeCreated set when an earlier call's outcome is unknown) and the claim. It
// fails with errBusy while another worker's call is in flight. known is the
// record as last read, at knownRev (0: none): begin's write is then one
// compare-and-swap without a read of its own, unless it changed since.
//
// A call that never reported is unknown only if its request may have gone out
// (Sent, written before the request leaves): one abandoned while it waited for
// its grant, by a replica that died or lost NATS, was never sent and is given
// back.
func (s *idempotency) begin(ctx context.Context, ref commandRef, known commandRecord, knownRev uint64) (before commandRecord, c claim, err error) {
	rec, rev, err := s.apply(ctx, ref, &known, knownRev, beginCall(leases{call: s.grantWait + s.lease}, &before))
	if err != nil && !isTransitionRefusal(err) && !rec.PendingUntil.IsZero() {
		// The write's answer was lost (the bucket's leader changing, a
		// partition healing): it may have been stored. A record that holds
		// this very claim is this call's; without this look, every later
		// attempt would wait for it to lapse.
		if r, rrev, ok := s.ownWrite(ctx, ref, rec.Attempts, rec.PendingUntil); ok {
			return before, claim{until: r.PendingUntil, attempt: r.Attempts, record: r, rev: rrev}, nil
		}
	}
	if err != nil {
		return before, claim{}, err
	}
	return before, claim{until: rec.PendingUntil, attempt: rec.Attempts, record: rec, rev: rev}, nil
}

// ownWrite reads the record back, asking again for a few seconds while it
// cannot be read, and reports whether it holds the claim for attempt until
// then (begin's write, whose answer was lost, was stored).
func (s *idempotency) ownWrite(ctx context.Context, ref commandRef, attempt int, until time.Time) (commandRecord, uint64, bool) {
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for delay := 100 * time.Millisecond; ; delay = min(2*delay, time.Second) {
		gctx, gcancel := context.WithTimeout(rctx, 2*time.Second)
		r, rev, err := s.get(gctx, ref)
		gcancel()
		if err == nil {
			return r, rev, rev != 0 && ownClaim(&r, attempt, until)
		}
		select {
		case <-rctx.Done():
			return commandRecord{}, 0, false
		case <-time.After(delay):
		}
	}
}

// markSent records that the claim's request may go out. It is written before
// the request leaves, so a replica killed at any moment after its request
// left has left the mark: the next call then knows the outcome is unknown and
// reconciles a 66684. It is one compare-and-swap on the record begin wrote,
// with a read-and-retry only if something else wrote it; a claim that is no
// longer the record's (errLostClaim) or a cancel (errCancelled) refuse it.
func (s *idempotency) markSent(ctx context.Context, ref commandRef, c *claim) error {
	r, rev, err := s.apply(ctx, ref, &c.record, c.rev, markSentT(c.attempt, c.until))
	if err != nil {
		return err
	}
	c.record, c.rev = r, rev
	return nil
}

// unmarkSent takes back markSent while no request left on the claim c;
// sentBefore is the record's Sent before the mark.
func (s *idempotency) unmarkSent(ctx context.Context, ref commandRef, c *claim, sentBefore int) error {
	r, rev, err := s.apply(ctx, ref, &c.record, c.rev, unmarkSentT(c.attempt, c.until, sentBefore))
	if err != nil {
		return err
	}
	c.record, c.rev = r, rev
	return nil
}

// abort undoes begin for a call that was not sent (its gate refused it), if
// its claim c is still the record's.
func (s *idempotency) abort(ctx context.Context, ref commandRef, c claim, keepAttempt bool) error {
	_, _, err := s.apply(ctx, ref, nil, 0, abortCall(c.attempt, c.until, keepAttempt))
	return err
}

var errDone = errors.New("command already has its terminal event")

// end records a call's result: no call in flight any more, and whether its
// outcome is unknown. The call's claim c is given up only if it is still the
// record's.
func (s *idempotency) end(ctx context.Context, ref commandRef, c claim, unknown bool, last failure) error {
	_, _, err := s.apply(ctx, ref, nil, 0, endCall(c.attempt, c.until, unknown, last))
	return err
}

// finish stores the terminal event, published as body at seq in the events
// stream; the command is never sent again. known: the record as this call
// last wrote it (nil: read it).
func (s *idempotency) finish(ctx context.Context, ref commandRef, ev *outEvent, body []byte, seq uint64, known *claim) error {
	stored, err := storedFor(ev, body)
	if err != nil {
		return fmt.Errorf("idempotency record: %w", err)
	}
	t := finishT(stored, seq)
	if known != nil && known.rev != 0 {
		_, _, err = s.apply(ctx, ref, &known.record, known.rev, t)
	} else {
		_, _, err = s.apply(ctx, ref, nil, 0, t)
	}
	return err
}

// expire claims the record to end the command at its deadline without a
// call; it fails with errBusy while a call is in flight (its answer decides),
// errDone or errCancelled when the command has ended or was cancelled (before
// says how).
func (s *idempotency) expire(ctx context.Context, ref commandRef, deadline time.Time) (before commandRecord, err error) {
	_, _, err = s.apply(ctx, ref, nil, 0, expireT(leases{ending: endingLease}, deadline.Add(reconcileGrace), &before))
	return before, err
}

// endingLease bounds an expiry's hold on the record: publishing one event and
// storing it. A replica that dies meanwhile holds the command no longer.
const endingLease = 30 * time.Second

// markParked records where the command was parked (waiting: under its
// meeting, which publishes its waiting event once), and reports whether its
// waiting event was published already; it fails with errCancelled (rec says
// how) when a cancel came first.
func (s *idempotency) markParked(ctx context.Context, ref commandRef, token string, seq uint64, waiting bool) (already bool, rec commandRecord, err error) {
	rec, _, err = s.apply(ctx, ref, nil, 0, parkedT(token, seq, waiting, &already))
	return already, rec, err
}

// commandsBucket is the commands bucket the worker creates when missing.
func (s StreamSettings) commandsBucket(ttl time.Duration) jetstream.KeyValueConfig {
	s = s.withDefaults()
	return jetstream.KeyValueConfig{Bucket: BucketCommands, Description: "xygroup: one record per commandId",
		History: 1, TTL: ttl, Storage: jetstream.FileStorage, Replicas: s.Replicas,
		MaxBytes: s.RecordsMaxBytes, MaxValueSize: RecordMaxValueBytes}
}

// retryForReplay lets a replay try a failed command again: its failure stays in
// the events stream, and the replay's own terminal event follows. It reports
// false when the command was created (never sent again) or this replay already
// tried it.
func (s *idempotency) retryForReplay(ctx context.Context, ref commandRef, replayID string) (bool, error) {
	again := false
	_, _, err := s.apply(ctx, ref, nil, 0, replayT(replayID, &again))
	return again, err
}

// CommandState is what the idempotency record says of a command, for tools.
type CommandState = record.State

// LookupCommand reads the idempotency record of an enterprise's command
// (enterpriseID: the command's, else the workers' default tenant), as
// record.Lookup does.
func LookupCommand(ctx context.Context, js jetstream.JetStream, enterpriseID, commandID string) (CommandState, error) {
	return record.Lookup(ctx, js, enterpriseID, commandID)
}
