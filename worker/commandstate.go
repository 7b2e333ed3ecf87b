package worker

import (
	"errors"
	"fmt"
	"time"

	"github.com/xygroup/xygroup/worker/contract"
	"github.com/xygroup/xygroup/xylink"
)

// The command record's lifecycle, in one place. Every write of a command's
// record (idempotency.go, cancel.go, the expiry in probe.go) is one of the
// transitions below, applied with one compare-and-swap: the transition reads
// the record's state, the table says whether the move is allowed from it, and
// the transition sets all it changes at once. Whatever path a command takes
// (the shared consumer, a probe, a release, a lane, an expiry, a cancel, a
// replay), it moves through this table and no other code writes the record.
//
//	             begin  sent   abort  end    finish cancel expire replay park
//	queued       ok     lost   -      ok     ok     ok     ok     -      ok
//	unknown      ok     lost   -      ok     ok     out    ok     -      ok
//	claimed      busy   ok     ok     ok     ok     ok     busy   -      ok
//	sent         busy   ok     ok     ok     ok     inflt  busy   -      ok
//	lost-sent    ok     lost   ok     ok     ok     out    ok     -      ok
//	lost-unsent  ok     lost   ok     ok     ok     ok     ok     -      ok
//	ending       busy   lost   -      ok     ok     busy   busy   -      ok
//	cancelled    cncl   cncl   -      ok     ok     -      cncl   -      cncl
//	terminal     done   done   -      -      -      done   done   ok     -
//
// ok: allowed (it writes); -: nothing to do (no write: the first cancel or
// terminal event stands, or the claim is not this call's); busy: another's
// call or ending is in progress (try after it); lost: the caller's claim is
// not the record's (its request must not leave); out / inflt: a request may
// have taken effect (a cancel is answered already_sent / in_flight); cncl:
// cancelled; done: the command has its terminal event. "sent", "abort" and
// "end" act for the claim begin wrote (its attempt n and the end of its
// lease: a lapsed unsent attempt is given back, so the claim that follows it
// has the same n); "replay" needs a failed (or cancelled) terminal event not
// tried by this replay yet.
// TestCommandTransitionTable checks every cell. An expire from unknown or
// lost-sent is also busy until the command's reconciling time (its deadline
// plus reconcileGrace): a call may still meet 66684 and reconcile it. An end
// with 66620 settles an unknown outcome (a meeting that has not started has
// no groups): unknown becomes queued.

// commandState is what a command's record says of it at a moment.
type commandState int

const (
	stateQueued     commandState = iota // no call now; none of unknown outcome
	stateUnknown                        // no call now; an earlier call's outcome is unknown
	stateClaimed                        // a call is begun; its request has not been let go
	stateSent                           // a call's request may be at XYLink now
	stateLostSent                       // a begun call never reported, after its request may have left
	stateLostUnsent                     // a begun call never reported, before its request could leave
	stateEnding                         // a terminal event without a call (an expiry) is being stored
	stateCancelled                      // cancelled before any request could take effect
	stateTerminal                       // its terminal event is stored
	numCommandStates
)

var commandStateNames = [...]string{"queued", "unknown", "claimed", "sent", "lost-sent", "lost-unsent",
	"ending", "cancelled", "terminal"}

func (s commandState) String() string { return commandStateNames[s] }

// state classifies the record at now.
func (r *commandRecord) state(now time.Time) commandState {
	switch {
	case r.Terminal != nil:
		return stateTerminal
	case r.Cancelled != nil:
		return stateCancelled
	case !r.PendingUntil.IsZero() && now.Before(r.PendingUntil):
		if r.Attempts > 0 && r.Sent >= r.Attempts {
			return stateSent
		}
		return stateClaimed
	case !r.PendingUntil.IsZero():
		if r.Attempts > 0 && r.Sent >= r.Attempts {
			return stateLostSent
		}
		return stateLostUnsent
	case !r.EndingUntil.IsZero() && now.Before(r.EndingUntil):
		return stateEnding
	case r.MaybeCreated:
		return stateUnknown
	}
	return stateQueued
}

// mayHaveTakenEffect: a request for the command may have reached XYLink and
// created its groups (the one question cancel and begin both ask).
func (s commandState) mayHaveTakenEffect() bool {
	return s == stateSent || s == stateLostSent || s == stateUnknown
}

// Transition errors: a move the table refuses. errDone, errCancelled and
// errBusy are the pipeline's own (idempotency.go, cancel.go).
var (
	// errLostClaim: the caller's claim is no longer the record's (its lease
	// ran out and another replica began a call): its request must not leave.
	errLostClaim = errors.New("the call's claim on the command record was lost")
	// errRequestOut: a request for the command may have taken effect.
	errRequestOut = errors.New("a request for the command may have taken effect")
)

// illegalTransition is a move the table does not allow from the record's
// state; it is a bug in the caller, reported, never written.
type illegalTransition struct {
	transition string
	from       commandState
}

func (e illegalTransition) Error() string {
	return fmt.Sprintf("command record: %s is not allowed from %s", e.transition, e.from)
}

// transition is one row of the table: change checks what the move requires
// of r at now and sets what it changes; it returns whether to write.
type transition struct {
	name   string
	change func(r *commandRecord, now time.Time) (bool, error)
}

// leases says how long a claim or an ending holds the record.
type leases struct {
	call   time.Duration // a call: its grant wait and its own time (begin)
	ending time.Duration // a terminal event without a call: publishing and storing it (expire)
}

// resolveLost settles a claim whose holder never reported: its request may
// have left (the outcome is unknown), or it was abandoned before (the attempt
// is given back).
func resolveLost(r *commandRecord, s commandState) {
	switch s {
	case stateLostSent:
		r.MaybeCreated = true
	case stateLostUnsent:
		if r.Attempts > 0 {
			r.Attempts--
		}
		r.Sent = min(r.Sent, r.Attempts)
	}
	r.PendingUntil = time.Time{}
}

// claimable says why the record cannot be claimed from s (for a call or an
// ending), or nil: it has ended (before receives it), or another's call or
// ending is in progress.
func claimable(r *commandRecord, s commandState, before *commandRecord) error {
	switch s {
	case stateTerminal:
		*before = *r
		return errDone
	case stateCancelled:
		*before = *r
		return errCancelled
	case stateClaimed, stateSent:
		return errBusy{until: r.PendingUntil}
	case stateEnding:
		return errBusy{until: r.EndingUntil}
	}
	return nil
}

// beginCall claims the record for a call: attempts+1, in flight for the lease.
// before receives the record as it was (resolved, for a lost claim).
func beginCall(l leases, before *commandRecord) transition {
	return transition{"begin", func(r *commandRecord, now time.Time) (bool, error) {
		s := r.state(now)
		if err := claimable(r, s, before); err != nil {
			return false, err
		}
		resolveLost(r, s)
		r.EndingUntil = time.Time{}
		*before = *r
		r.Attempts++
		r.PendingUntil = now.Add(l.call)
		return true, nil
	}}
}

// ownClaim: the record's claim is the one begin wrote for attempt, with its
// lease until then.
func ownClaim(r *commandRecord, attempt int, until time.Time) bool {
	return r.Attempts == attempt && r.PendingUntil.Equal(until)
}

// markSentT: the claim's request is about to leave. Only the claim's holder
// may say so, while the claim is the record's.
func markSentT(attempt int, until time.Time) transition {
	return transition{"sent", func(r *commandRecord, now time.Time) (bool, error) {
		switch s := r.state(now); {
		case s == stateCancelled:
			return false, errCancelled // the cancel's write came first: no request
		case s == stateTerminal:
			return false, errDone
		case s != stateClaimed && s != stateSent, !ownClaim(r, attempt, until):
			return false, errLostClaim
		}
		r.Sent = max(r.Sent, attempt)
		return true, nil
	}}
}

// unmarkSentT takes back the claim's sent mark when no request left on it
// (its grant's departure window passed first): the record says what it said
// before the mark, sentBefore, while a fresh grant is awaited, so that a
// replica dying meanwhile does not look as if it had sent.
func unmarkSentT(attempt int, until time.Time, sentBefore int) transition {
	return transition{"unmark", func(r *commandRecord, now time.Time) (bool, error) {
		switch s := r.state(now); {
		case s == stateCancelled:
			return false, errCancelled
		case s == stateTerminal:
			return false, errDone
		case s != stateSent, !ownClaim(r, attempt, until), r.Sent != attempt:
			return false, errLostClaim
		}
		r.Sent = min(sentBefore, attempt-1)
		return true, nil
	}}
}

// abortCall undoes begin for a call whose request was held back: no call in
// flight, and the attempt given back unless keepAttempt (with its sent mark:
// a mark written before a gate that then refused must not make the next
// call of the same number look sent if its replica dies while it waits).
func abortCall(attempt int, until time.Time, keepAttempt bool) transition {
	return transition{"abort", func(r *commandRecord, now time.Time) (bool, error) {
		if r.PendingUntil.IsZero() || !ownClaim(r, attempt, until) {
			return false, nil // not this call's claim any more
		}
		r.PendingUntil = time.Time{}
		if !keepAttempt && r.Attempts > 0 {
			r.Attempts--
			r.Sent = min(r.Sent, r.Attempts)
		}
		return true, nil
	}}
}

// endCall records a call's answer when it is not terminal: no call in flight
// (if the claim is still this call's), whether its outcome is unknown, and
// the answer.
func endCall(attempt int, until time.Time, unknown bool, last failure) transition {
	return transition{"end", func(r *commandRecord, now time.Time) (bool, error) {
		if r.state(now) == stateTerminal {
			return false, nil
		}
		if ownClaim(r, attempt, until) {
			r.PendingUntil = time.Time{}
		}
		switch {
		case last.errorCode == xylink.CodeNoMeeting && !unknown:
			// The meeting has not started: no earlier request created its
			// groups, so there is nothing left to reconcile.
			r.MaybeCreated = false
		case unknown:
			r.MaybeCreated = true
		}
		r.Last = &lastAnswer{HTTPStatus: last.httpStatus, ErrorCode: last.errorCode,
			UserMessage: last.userMessage, DeveloperMessage: last.developerMessage}
		return true, nil
	}}
}

// finishT stores the terminal event, once: the command is never sent again.
func finishT(ev *storedEvent, seq uint64) transition {
	return transition{"finish", func(r *commandRecord, now time.Time) (bool, error) {
		if r.Terminal != nil {
			return false, nil // the first terminal event stands
		}
		r.PendingUntil, r.EndingUntil, r.Terminal, r.EventSeq = time.Time{}, time.Time{}, ev, seq
		return true, nil
	}}
}

// cancelT marks the command cancelled while no request for it may have taken
// effect; refused says why not (contract.Rejected*).
func cancelT(m cancelMark, refused *string) transition {
	return transition{"cancel", func(r *commandRecord, now time.Time) (bool, error) {
		*refused = ""
		switch s := r.state(now); s {
		case stateTerminal:
			*refused = contract.RejectedDone
			return false, nil
		case stateCancelled:
			return false, nil // the first cancel stands
		case stateSent:
			*refused = contract.RejectedInFlight
			return false, nil
		case stateEnding:
			return false, errBusy{until: r.EndingUntil}
		default:
			if s.mayHaveTakenEffect() {
				*refused = contract.RejectedAlreadySent
				return false, nil
			}
		}
		r.Cancelled = &m
		return true, nil
	}}
}

// expireT claims the record to end the command without a call (its deadline
// passed while it was parked), the way begin claims it for a call: refused
// while a call is in flight, whose answer decides. before receives the
// record as it was.
//
// A command whose earlier request's outcome is unknown is left to a call
// until reconcileUntil: one that meets 66684 reconciles it as created.
func expireT(l leases, reconcileUntil time.Time, before *commandRecord) transition {
	return transition{"expire", func(r *commandRecord, now time.Time) (bool, error) {
		s := r.state(now)
		if (s == stateUnknown || s == stateLostSent) && now.Before(reconcileUntil) {
			return false, errBusy{until: reconcileUntil}
		}
		if err := claimable(r, s, before); err != nil {
			return false, err
		}
		resolveLost(r, s)
		*before = *r
		r.EndingUntil = now.Add(l.ending)
		return true, nil
	}}
}

// replayT lets a replay try a failed or cancelled command again, once per
// replay; again says whether it may.
func replayT(replayID string, again *bool) transition {
	return transition{"replay", func(r *commandRecord, now time.Time) (bool, error) {
		*again = false
		if r.Terminal == nil || r.Terminal.Subject == SubjectCreated || r.ReplayID == replayID {
			return false, nil
		}
		r.Terminal, r.EventSeq, r.ReplayID, r.Waiting, r.Cancelled, r.EndingUntil = nil, 0, replayID, false, nil, time.Time{}
		*again = true
		return true, nil
	}}
}

// parkedT notes where the command was parked (token, and its place seq in
// the parked stream): under a waiting meeting (waiting: its waiting event is
// then published once) or its tenant's hold, so that a cancel by its id finds
// the copy there. already: the waiting event was published before, or the
// command is done. A cancel written before it refuses it: the cancel may have
// looked for the copy before it was stored, so the parker ends the command
// itself.
// accepted reports whether the command was taken on before: called, or
// parked (under its meeting, its tenant's hold).
func (r commandRecord) accepted() bool {
	return r.Attempts > 0 || r.ParkedSeq != 0 || r.Waiting
}

func parkedT(token string, seq uint64, waiting bool, already *bool) transition {
	return transition{"park", func(r *commandRecord, now time.Time) (bool, error) {
		*already = r.Waiting || r.Terminal != nil
		if r.Terminal == nil && r.Cancelled != nil {
			return false, errCancelled
		}
		if r.Terminal != nil || (r.ParkedUnder == token && r.ParkedSeq == seq && (r.Waiting || !waiting)) {
			return false, nil
		}
		r.Waiting = r.Waiting || waiting
		r.ParkedUnder, r.ParkedSeq = token, seq
		return true, nil
	}}
}
