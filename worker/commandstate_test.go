package worker

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/xygroup/xygroup/worker/contract"
	"github.com/xygroup/xygroup/xylink"
)

// recordIn builds a record in state s at now, with its current call (if any)
// being attempt 2.
func recordIn(s commandState, now time.Time) commandRecord {
	future, past := now.Add(time.Minute), now.Add(-time.Minute)
	r := commandRecord{Attempts: 1, Sent: 1}
	switch s {
	case stateUnknown:
		r.MaybeCreated = true
	case stateClaimed:
		r.Attempts, r.PendingUntil = 2, future
	case stateSent:
		r.Attempts, r.Sent, r.PendingUntil = 2, 2, future
	case stateLostSent:
		r.Attempts, r.Sent, r.PendingUntil = 2, 2, past
	case stateLostUnsent:
		r.Attempts, r.PendingUntil = 2, past
	case stateEnding:
		r.EndingUntil = future
	case stateCancelled:
		r.Cancelled = &cancelMark{CancelID: "c1", At: past}
	case stateTerminal:
		r.Terminal = &storedEvent{Subject: SubjectFailed + ".rejected", MsgID: "m"}
	}
	return r
}

// outcomeOf names what a transition did: its refusal, "-" for no write, or
// "ok".
func outcomeOf(write bool, err error, refused string) string {
	switch {
	case errors.Is(err, errDone):
		return "done"
	case errors.Is(err, errCancelled):
		return "cncl"
	case errors.Is(err, errLostClaim):
		return "lost"
	case isBusy(err):
		return "busy"
	case err != nil:
		return "err:" + err.Error()
	case refused == contract.RejectedInFlight:
		return "inflt"
	case refused == contract.RejectedAlreadySent:
		return "out"
	case refused == contract.RejectedDone:
		return "done"
	case !write:
		return "-"
	}
	return "ok"
}

// TestCommandTransitionTable runs every transition from every state, without
// NATS or clocks, and compares the outcome with the table (the one in
// commandstate.go's doc comment).
func TestCommandTransitionTable(t *testing.T) {
	now := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	l := leases{call: time.Minute, ending: 30 * time.Second}
	failedTerminal := &storedEvent{Subject: SubjectFailed + ".x"}
	var refused string
	var already, again bool
	var before commandRecord
	transitions := []struct {
		col  string
		make func(until time.Time) transition // until: the caller's claim's lease (attempt 2's)
	}{
		{"begin", func(time.Time) transition { return beginCall(l, &before) }},
		{"sent", func(until time.Time) transition { return markSentT(2, until) }},
		{"unmark", func(until time.Time) transition { return unmarkSentT(2, until, 1) }},
		{"abort", func(until time.Time) transition { return abortCall(2, until, false) }},
		{"end", func(until time.Time) transition { return endCall(2, until, false, failure{}) }},
		{"finish", func(time.Time) transition { return finishT(failedTerminal, 0) }},
		{"cancel", func(time.Time) transition { return cancelT(cancelMark{CancelID: "c2"}, &refused) }},
		{"expire", func(time.Time) transition { return expireT(l, time.Time{}, &before) }},
		{"replay", func(time.Time) transition { return replayT("r1", &again) }},
		{"park", func(time.Time) transition { return parkedT("tok", 7, true, &already) }},
	}
	want := map[commandState]string{
		stateQueued:     "ok    lost  lost  -     ok    ok    ok    ok    -     ok",
		stateUnknown:    "ok    lost  lost  -     ok    ok    out   ok    -     ok",
		stateClaimed:    "busy  ok    lost  ok    ok    ok    ok    busy  -     ok",
		stateSent:       "busy  ok    ok    ok    ok    ok    inflt busy  -     ok",
		stateLostSent:   "ok    lost  lost  ok    ok    ok    out   ok    -     ok",
		stateLostUnsent: "ok    lost  lost  ok    ok    ok    ok    ok    -     ok",
		stateEnding:     "busy  lost  lost  -     ok    ok    busy  busy  -     ok",
		stateCancelled:  "cncl  cncl  cncl  -     ok    ok    -     cncl  -     cncl",
		stateTerminal:   "done  done  done  -     -     -     done  done  ok    -",
	}
	for s := commandState(0); s < numCommandStates; s++ {
		if got := recordIn(s, now); got.state(now) != s {
			t.Fatalf("recordIn(%s) is in state %s", s, got.state(now))
		}
		var got []string
		for _, tr := range transitions {
			r := recordIn(s, now)
			refused, already, again = "", false, false
			write, err := tr.make(r.PendingUntil).change(&r, now)
			got = append(got, outcomeOf(write, err, refused))
		}
		if w := strings.Fields(want[s]); fmt.Sprint(w) != fmt.Sprint(got) {
			t.Errorf("from %-11s got  %v\n%23s want %v", s, got, "", w)
		}
	}
}

// TestCommandTransitionsSetWhatTheyClaim checks the states transitions lead
// to: what every later transition relies on.
func TestCommandTransitionsSetWhatTheyClaim(t *testing.T) {
	now := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	l := leases{call: time.Minute, ending: 30 * time.Second}
	var before commandRecord
	claimed := now.Add(time.Minute) // recordIn's claim of attempt 2
	cases := []struct {
		name string
		from commandState
		t    transition
		want commandState
		also func(r commandRecord) string
	}{
		{"begin claims", stateQueued, beginCall(l, &before), stateClaimed, func(r commandRecord) string {
			if r.Attempts != 2 {
				return fmt.Sprintf("attempts %d, want 2", r.Attempts)
			}
			return ""
		}},
		{"begin after a lost sent call: unknown, then claimed", stateLostSent, beginCall(l, &before), stateClaimed, func(r commandRecord) string {
			if !r.MaybeCreated || r.Attempts != 3 || !before.MaybeCreated {
				return fmt.Sprintf("maybeCreated %v, attempts %d; before %+v", r.MaybeCreated, r.Attempts, before)
			}
			return ""
		}},
		{"begin after a lost unsent call gives its attempt back", stateLostUnsent, beginCall(l, &before), stateClaimed, func(r commandRecord) string {
			if r.MaybeCreated || r.Attempts != 2 {
				return fmt.Sprintf("maybeCreated %v, attempts %d", r.MaybeCreated, r.Attempts)
			}
			return ""
		}},
		{"sent", stateClaimed, markSentT(2, claimed), stateSent, nil},
		{"unmark takes the mark back, not the claim", stateSent, unmarkSentT(2, claimed, 1), stateClaimed, func(r commandRecord) string {
			if r.Attempts != 2 || r.Sent != 1 {
				return fmt.Sprintf("attempts %d sent %d", r.Attempts, r.Sent)
			}
			return ""
		}},
		{"abort gives back the attempt and its mark", stateSent, abortCall(2, claimed, false), stateQueued, func(r commandRecord) string {
			if r.Attempts != 1 || r.Sent != 1 {
				return fmt.Sprintf("attempts %d sent %d", r.Attempts, r.Sent)
			}
			return ""
		}},
		{"end unknown", stateSent, endCall(2, claimed, true, failure{}), stateUnknown, nil},
		{"66620 settles an unknown outcome: the meeting has no groups", stateUnknown,
			endCall(2, claimed, false, failure{errorCode: xylink.CodeNoMeeting}), stateQueued, nil},
		{"end of a call whose claim another took leaves that claim", stateSent, endCall(1, claimed, false, failure{}), stateSent, nil},
		{"end of a lapsed claim of the same attempt leaves the claim that followed it", stateSent,
			endCall(2, claimed.Add(-time.Minute), false, failure{}), stateSent, nil},
		{"expire holds the record", stateQueued, expireT(l, time.Time{}, &before), stateEnding, nil},
		{"expire after a lost sent call keeps the unknown outcome", stateLostSent, expireT(l, time.Time{}, &before), stateEnding, func(r commandRecord) string {
			if !r.MaybeCreated || !before.MaybeCreated {
				return "MaybeCreated lost"
			}
			return ""
		}},
		{"finish ends an ending", stateEnding, finishT(&storedEvent{Subject: "s"}, 0), stateTerminal, nil},
		{"a replay takes a cancel back", stateTerminal, replayT("r", new(bool)), stateQueued, nil},
	}
	for _, c := range cases {
		r := recordIn(c.from, now)
		write, err := c.t.change(&r, now)
		if err != nil || !write {
			t.Errorf("%s: write %v, err %v", c.name, write, err)
			continue
		}
		if s := r.state(now); s != c.want {
			t.Errorf("%s: in %s, want %s", c.name, s, c.want)
		}
		if c.also != nil {
			if msg := c.also(r); msg != "" {
				t.Errorf("%s: %s", c.name, msg)
			}
		}
	}
}

// An expiry leaves a command whose earlier request's outcome is unknown to a
// call until its reconciling time passes (a 66684 then says it was created).
func TestExpiryWaitsToReconcileAnUnknownOutcome(t *testing.T) {
	now := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	l := leases{call: time.Minute, ending: 30 * time.Second}
	var before commandRecord
	for _, s := range []commandState{stateUnknown, stateLostSent} {
		r := recordIn(s, now)
		if _, err := expireT(l, now.Add(time.Minute), &before).change(&r, now); !isBusy(err) {
			t.Errorf("from %s before the reconciling time: %v, want busy", s, err)
		}
		r = recordIn(s, now)
		if write, err := expireT(l, now.Add(-time.Second), &before).change(&r, now); !write || err != nil {
			t.Errorf("from %s after the reconciling time: write %v, %v", s, write, err)
		}
	}
	r := recordIn(stateQueued, now)
	if write, err := expireT(l, now.Add(time.Minute), &before).change(&r, now); !write || err != nil {
		t.Errorf("a queued command waits for nothing: write %v, %v", write, err)
	}
}
