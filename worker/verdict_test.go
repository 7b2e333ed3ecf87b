package worker

import (
	"testing"
	"time"
)

// Each constructor makes one kind, with what that kind needs and nothing of
// another's; learned carries what a pass learned over to another kind.
func TestVerdictConstructors(t *testing.T) {
	ev := &outEvent{subject: SubjectCreated}
	at := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	cases := []struct {
		v           verdict
		kind        verdictKind
		parks, ends bool
	}{
		{retryIn(time.Second), doRetry, false, false},
		{endWith(ev), doEnd, false, true},
		{repeatEvent(ev), doEnd, false, true},
		{endAfterCall(ev, &claim{}), doEnd, false, true},
		{parkUnder(at, 1, at), doPark, true, false},
		{parkUntilNotBefore(at, 0, at), doParkAhead, true, false},
		{holdUntil(at, 1, at), doHold, true, false},
		{toLane(0, at), doLane, true, false},
		{giveBack(), doGiveBack, false, false},
	}
	for _, c := range cases {
		v := c.v
		if v.kind != c.kind || v.parks() != c.parks || v.ends() != c.ends || (v.event != nil) != c.ends {
			t.Errorf("%s: kind %s, parks %v, ends %v, event %v", c.kind, v.kind, v.parks(), v.ends(), v.event != nil)
		}
		if (v.retry != 0) != (c.kind == doRetry) || (!v.parkFirst.IsZero()) != (c.kind == doPark || c.kind == doParkAhead || c.kind == doHold) {
			t.Errorf("%s: retry %v, parkFirst %v", c.kind, v.retry, v.parkFirst)
		}
	}
	waited := retryIn(time.Second)
	waited.waiting, waited.attempts, waited.deadline = true, 3, at
	if v := parkUnder(at, 0, time.Time{}).learned(waited); v.kind != doPark || !v.waiting || v.attempts != 3 || !v.deadline.Equal(at) {
		t.Errorf("learned: %+v", v)
	}
}
