package ratelimit

import (
	"testing"
	"time"
)

// An enterprise idle for longer than the sweep's minute loses its queue
// state but keeps a widened guard until the guard is back at its floor; the
// guard goes to the next dispenser as durations (its width above the floor,
// the time since it changed) and narrows there on the same schedule.
func TestIdleEnterpriseKeepsItsGuard(t *testing.T) {
	now := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	opts := Options{Now: func() time.Time { return now }}
	opts.defaults() // guard 25 ms, step 25 ms, quiet 30 s
	d := newDispenser(opts)
	d.throttled("widened")
	d.ents["plain"] = &enterpriseQueue{index: -1}
	active := func() bool { return true }

	now = now.Add(2 * time.Minute) // four quiet periods: 4 × 5 ms narrower
	d.grantDue(active)
	if _, ok := d.ents["plain"]; ok {
		t.Error("an idle enterprise at its floor was not swept")
	}
	q, ok := d.ents["widened"]
	if !ok {
		t.Fatal("an idle enterprise with a widened guard was swept, its guard with it")
	}
	if g := d.guard(q, now); g != 30*time.Millisecond {
		t.Fatalf("guard after two quiet minutes %v, want 30 ms", g)
	}

	// Handed over 10 s into its quiet period, it narrows at the next
	// dispenser 20 s later, whatever that one's clock says.
	now = now.Add(10 * time.Second)
	state := d.handover()
	if h := state["widened"]; h.ExtraMs != 5 || h.AgeMs != 10000 {
		t.Fatalf("handed over %+v, want 5 ms above the floor, changed 10 s ago", h)
	}
	later := now.Add(time.Hour) // another replica's clock
	next := newDispenser(Options{Now: func() time.Time { return later }})
	next.opts.defaults()
	next.adopt(state)
	if g := next.guard(next.ents["widened"], later); g != 30*time.Millisecond {
		t.Fatalf("the next dispenser starts at %v, want 30 ms", g)
	}
	later = later.Add(20 * time.Second)
	if g := next.guard(next.ents["widened"], later); g != 25*time.Millisecond {
		t.Fatalf("after a quiet period: %v, want the floor", g)
	}

	// Back at its floor, it is swept at last.
	now = now.Add(20 * time.Second)
	d.grantDue(active)
	if _, ok := d.ents["widened"]; ok {
		t.Error("an idle enterprise back at its floor was not swept")
	}
	if len(d.handover()) != 0 {
		t.Error("guards at the floor are handed over")
	}
}
