package ratelimit_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/xygroup/xygroup/worker/ratelimit"
	wt "github.com/xygroup/xygroup/worker/workertest"
)

// await polls cond until it holds or within passes.
func await(t *testing.T, within time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > within {
			t.Fatalf("%s: not within %v", what, within)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return time.Since(start)
}

// The limiter's bucket is in memory: a restart of the only NATS server loses it.
// The limiter must recreate it and grant again, and report itself not ready
// while no dispenser could be elected.
func TestGrantsResumeAfterNATSRestart(t *testing.T) {
	srv := wt.StartRestartableNATS(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var lims []*ratelimit.Cluster
	for i := range 3 {
		lim, err := ratelimit.NewCluster(ctx, srv.Connect(), ratelimit.Options{Name: fmt.Sprintf("replica-%d", i)})
		if err != nil {
			t.Fatal(err)
		}
		lims = append(lims, lim)
	}
	elections := func() (n int64) {
		for _, lim := range lims {
			n += lim.Stats().Elections
		}
		return n
	}
	// A grant received after the restart but before any election since is one
	// the old dispenser gave while cut off: stale.
	var grants, stale, electionsAtRestart atomic.Int64
	electionsAtRestart.Store(1 << 62)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	for _, lim := range lims {
		for range 2 {
			wg.Go(func() {
				for lim.Wait(ctx, "e", ratelimit.Live) == nil {
					grants.Add(1)
					if elections() == electionsAtRestart.Load() {
						stale.Add(1)
					}
				}
			})
		}
	}
	await(t, 15*time.Second, "first grants", func() bool { return grants.Load() > 10 })

	srv.Stop()
	// The dispenser stops granting StopAfter after its last renewal.
	await(t, 15*time.Second, "dispenser stepped down", func() bool {
		for _, lim := range lims {
			if lim.Stats().Dispensing {
				return false
			}
		}
		return true
	})
	// While the server is away no dispenser can be elected: every member says so
	// once an election would have been over.
	down := await(t, 15*time.Second, "limiter reported not ready", func() bool {
		for _, lim := range lims {
			if lim.Ready() == nil {
				return false
			}
		}
		return true
	})
	t.Logf("not ready %v after the server stopped: %v", down.Round(time.Millisecond), lims[0].Ready())
	electionsAtRestart.Store(elections())
	srv.Start()
	restarted, before := time.Now(), grants.Load()
	const within = 30 * time.Second
	for grants.Load() == before && time.Since(restarted) < within {
		time.Sleep(20 * time.Millisecond)
	}
	first := time.Since(restarted)
	if grants.Load() == before {
		t.Fatalf("0 grants in %v after the restart (%d before it)", within, before)
	}
	await(t, 10*time.Second, "limiter ready again", func() bool { return lims[0].Ready() == nil })
	t.Logf("grants again %v after the restart; %d stale grants delivered after it", first.Round(time.Millisecond), stale.Load())
	if stale.Load() != 0 {
		t.Fatalf("%d grants of the old dispenser, given while it was cut off, arrived after the restart", stale.Load())
	}
}
