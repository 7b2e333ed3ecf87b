package ratelimit_test

import (
	"context"
	"errors"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/xygroup/xygroup/worker/ratelimit"
	"github.com/xygroup/xygroup/xylink/sandbox"
)

// A guard as small as maxCatchUp (2 ms, accepted by --rate-guard) would
// leave the departures no budget; it is raised to MinGuard (5 ms: a budget
// of 1.5 ms). Callers that use the whole window their grants give (half of
// them leave just before its end) must still put no more than 20 departures
// in any sliding second, and no window may be wider than the budget.
func TestSmallGuardGivesNoLatenessItCannotCover(t *testing.T) {
	reps := startReplicas(t, 1, ratelimit.Options{Guard: 2 * time.Millisecond})
	lim := reps[0].lim
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var d0 ratelimit.Departure
	if err := lim.Wait(ctx, "e", ratelimit.Live, ratelimit.TakeDeparture(&d0)); err != nil {
		t.Fatalf("no first grant: %v", err)
	}
	run, stop := context.WithTimeout(ctx, 6*time.Second)
	defer stop()
	var mu sync.Mutex
	var departed []time.Time
	var widest time.Duration
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for {
				var d ratelimit.Departure
				if err := lim.Wait(run, "e", ratelimit.Live, ratelimit.TakeDeparture(&d)); err != nil {
					return
				}
				mu.Lock()
				widest = max(widest, d.By.Sub(d.From))
				mu.Unlock()
				if rand.IntN(2) == 0 {
					// A slow caller, within its window: work, not a wait for a condition.
					time.Sleep(time.Until(d.By.Add(-3 * time.Millisecond)))
				}
				switch err := d.Leave(run); {
				case errors.Is(err, ratelimit.ErrLate):
					continue
				case err != nil:
					return
				}
				mu.Lock()
				departed = append(departed, time.Now())
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	slices.SortFunc(departed, func(a, b time.Time) int { return a.Compare(b) })
	peak := sandbox.MaxInWindow(departed, time.Second)
	t.Logf("%d departures, max %d in a sliding second; widest window %v", len(departed), peak, widest)
	if budget := (ratelimit.MinGuard - 2*time.Millisecond) / 2; widest > budget {
		t.Errorf("a window %v wide, more than the budget %v", widest, budget)
	}
	if peak > 20 {
		t.Fatalf("%d departures in one sliding second (limit 20); windows up to %v wide with a 2 ms guard", peak, widest)
	}
}
