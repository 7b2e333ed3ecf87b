package ratelimit

import (
	"testing"
	"time"
)

// A grant is late when its transit exceeds the shortest recent one by more
// than lateTransit, on a fast network as on a slow one.
func TestLateTransit(t *testing.T) {
	for _, usual := range []time.Duration{300 * time.Microsecond, 40 * time.Millisecond} {
		var tr transitTimes
		for range 10 {
			if tr.late(usual) {
				t.Fatalf("usual transit %v counted late", usual)
			}
		}
		if tr.late(usual + lateTransit - time.Millisecond) {
			t.Errorf("%v over the usual %v counted late", lateTransit-time.Millisecond, usual)
		}
		if !tr.late(usual + lateTransit + time.Millisecond) {
			t.Errorf("%v over the usual %v not counted late", lateTransit+time.Millisecond, usual)
		}
	}
}

func TestGrantReplyCarriesQueueTime(t *testing.T) {
	if got := string(grantReplyOK(1500 * time.Microsecond)); got != `{"ok":true,"q":1500}` {
		t.Fatalf("reply %s", got)
	}
}
