package worker

import (
	"sync/atomic"
	"testing"
	"time"
)

func TestGateFirstCallerGoesAtOnce(t *testing.T) {
	g := newMeetingGate()
	waited := false
	leave := g.enter("m1", time.Hour, func() { waited = true })
	if waited {
		t.Fatal("a free gate called waiting")
	}
	// Another meeting is not held up by m1's call.
	g.enter("m2", time.Hour, func() { t.Error("m2 waited for m1") })()
	leave()
	// Left: the next caller goes at once too.
	g.enter("m1", time.Hour, func() { t.Error("waited for a gate that was left") })()
}

func TestGateOthersWaitForTheAnswer(t *testing.T) {
	g := newMeetingGate()
	leave := g.enter("m1", time.Hour, nil)

	var waits atomic.Int32
	entered := make(chan func(), 2)
	for range 2 {
		go func() { entered <- g.enter("m1", time.Hour, func() { waits.Add(1) }) }()
	}
	for waits.Load() < 2 {
		time.Sleep(time.Millisecond)
	}
	select {
	case <-entered:
		t.Fatal("a waiter went while the first call was in flight")
	case <-time.After(50 * time.Millisecond):
	}

	leave() // the answer is known: one waiter takes the gate, the other waits on
	second := <-entered
	select {
	case <-entered:
		t.Fatal("two waiters went at once")
	case <-time.After(50 * time.Millisecond):
	}
	second()
	(<-entered)()
	if n := waits.Load(); n != 2 {
		t.Fatalf("waiting called %d times, want once per waiter", n)
	}
}

func TestGateWaiterGivesUpAfterMaxWait(t *testing.T) {
	g := newMeetingGate()
	leave := g.enter("m1", time.Hour, nil)

	start := time.Now()
	waits := 0
	giveUp := g.enter("m1", 30*time.Millisecond, func() { waits++ })
	if d := time.Since(start); d < 30*time.Millisecond {
		t.Fatalf("gave up after %v, before its bound", d)
	}
	if waits != 1 {
		t.Fatalf("waiting called %d times, want 1", waits)
	}
	// Its leave is a no-op: the gate stays with the first caller.
	giveUp()
	done := make(chan struct{})
	go func() { g.enter("m1", time.Hour, nil)(); close(done) }()
	select {
	case <-done:
		t.Fatal("a waiter that gave up released the first caller's gate")
	case <-time.After(50 * time.Millisecond):
	}
	leave()
	<-done
}

func TestGateHinted(t *testing.T) {
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	cases := []struct {
		name  string
		hint  bool
		token string
		at    time.Duration // after the hint
		want  bool
	}{
		{name: "no hint", token: "m1", want: false},
		{name: "just now", hint: true, token: "m1", want: true},
		{name: "9.9 s ago", hint: true, token: "m1", at: 9900 * time.Millisecond, want: true},
		{name: "10 s ago: stale", hint: true, token: "m1", at: 10 * time.Second, want: false},
		{name: "another meeting", hint: true, token: "m2", want: false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			g := newMeetingGate()
			if tc.hint {
				g.hint("m1", t0)
			}
			if got := g.hinted(tc.token, t0.Add(tc.at)); got != tc.want {
				t.Fatalf("hinted = %v, want %v", got, tc.want)
			}
		})
	}
}

// Hints older than 10 s are dropped when another is recorded, so the map does
// not grow with every meeting that ever answered 66620.
func TestGateHintsPruned(t *testing.T) {
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	g := newMeetingGate()
	g.hint("m1", t0)
	g.hint("m2", t0.Add(5*time.Second))
	g.hint("m3", t0.Add(11*time.Second))
	if _, ok := g.hints["m1"]; ok {
		t.Fatal("a stale hint was kept")
	}
	if len(g.hints) != 2 || !g.hinted("m2", t0.Add(11*time.Second)) {
		t.Fatalf("hints %v", g.hints)
	}
}
