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

func TestRepliesCarryPlaceAndQueueTime(t *testing.T) {
	d := &dispenser{id: "D1"}
	p := &pending{seq: 42}
	if got := string(d.reply(true, p, 1500*time.Microsecond)); got != `{"ok":true,"q":1500,"d":"D1","s":42}` {
		t.Fatalf("grant %s", got)
	}
	if got := string(d.reply(false, p, 0)); got != `{"ok":false,"d":"D1","s":42}` {
		t.Fatalf("ask again %s", got)
	}
}

// Grants late in a row for longer than a pause lasts mean a slower network:
// its transit becomes the usual one.
func TestLateInARowIsASlowerNetwork(t *testing.T) {
	var tr transitTimes
	tr.late(time.Millisecond)
	slower := time.Millisecond + 2*lateTransit
	if !tr.late(slower) {
		t.Fatal("first slower grant not late")
	}
	tr.lateSince = tr.lateSince.Add(-lateShift) // as if late in a row for lateShift
	if tr.late(slower) {
		t.Fatal("still late after lateShift of late grants")
	}
	if tr.late(slower) {
		t.Fatal("the slower transit is not the usual one now")
	}
}
