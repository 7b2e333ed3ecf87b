package ratelimit_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/xygroup/xygroup/worker/ratelimit"
	wt "github.com/xygroup/xygroup/worker/workertest"
)

// Two replicas' callers saturate one enterprise: the dispenser's own audit
// in its lease never shows more departures in a sliding second than the
// rate, and shows exactly the rate once saturated; 429s reported by the
// other replica are counted, each once.
func TestLeaseAuditsTheLimit(t *testing.T) {
	const rate = 20
	srv := wt.StartNATS(t)
	js := wt.JetStream(t, wt.Connect(t, srv))
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	var reps []*ratelimit.Cluster
	for i := range 2 {
		lim, err := ratelimit.NewCluster(ctx, wt.Connect(t, srv), ratelimit.Options{Name: fmt.Sprintf("replica-%d", i)})
		if err != nil {
			t.Fatal(err)
		}
		reps = append(reps, lim)
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	defer stop()
	for _, lim := range reps {
		for range 4 {
			wg.Go(func() {
				for lim.Wait(ctx, "e", ratelimit.Live) == nil {
				}
			})
		}
	}
	lease := func() ratelimit.EnterpriseInfo {
		info, ok, err := ratelimit.Dispenser(ctx, js)
		if err != nil {
			t.Fatal(err)
		}
		e := info.Enterprises["e"]
		if !ok || e.MaxWindow1m <= rate {
			return e
		}
		t.Fatalf("the lease shows %d departures in a sliding second, over the rate of %d", e.MaxWindow1m, rate)
		return e
	}
	// Saturated, a sliding second holds the rate: the 20 departures of 19
	// spacings of 51.25 ms span 973.75 ms. A grant late on a loaded machine
	// delays the ones after it, so the first clean second may come later.
	wt.Eventually(t, time.Minute, func() bool { return lease().MaxWindow1m == rate },
		fmt.Sprintf("the lease showing %d departures in a sliding second", rate))

	// The replica that does not dispense reports three 429s. The dispenser
	// subscribed to the reports before its first grant, so none is lost.
	other := reps[0]
	if other.Dispenses("e") {
		other = reps[1]
	}
	for range 3 {
		other.Throttled("e")
	}
	wt.Eventually(t, 30*time.Second, func() bool { return lease().ThrottledTotal >= 3 }, "the lease counting three 429s")
	if e := lease(); e.ThrottledTotal != 3 || e.Throttled10m != 3 {
		t.Fatalf("the lease counts %d 429s (%d in ten minutes), want 3", e.ThrottledTotal, e.Throttled10m)
	}
	// What the dispensing replica exports is what it writes in the lease
	// (the most in a second stays for a minute).
	for _, lim := range reps {
		e, ok := lim.Use()["e"]
		if lim == other {
			if ok {
				t.Fatalf("the replica that does not dispense e reports %+v", e)
			}
			continue
		}
		if e.Since.IsZero() || e.ThrottledTotal != 3 || e.MaxWindow1m != rate {
			t.Fatalf("the dispenser reports %+v", e)
		}
	}
}
