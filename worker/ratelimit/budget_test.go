package ratelimit_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/xygroup/xygroup/worker/ratelimit"
	"github.com/xygroup/xygroup/xylink/sandbox"
)

// A grant held 8 ms on its way and a "sent" mark 22 ms longer than usual
// are each within what the budget allows; together they are not. Two
// replicas saturate one enterprise: the near one (the dispenser) sends at
// once; the far one's every fourth grant is held on its way and followed by
// a slow mark. The grant's way, the mark and the wait spend one budget, so
// those requests do not leave on their grants, and no sliding second of
// departures holds more than 20.
func TestLateGrantAndSlowMarkSpendOneBudget(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	disp, far, link := slowLinkSetup(t, ctx)

	var mu sync.Mutex
	var departed []time.Time
	var farUsed, farRefused atomic.Int64
	run, stop := context.WithTimeout(ctx, 4*time.Second)
	defer stop()
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for {
				if err := disp.Wait(run, "e", ratelimit.Live); err != nil {
					return
				}
				mu.Lock()
				departed = append(departed, time.Now())
				mu.Unlock()
			}
		})
	}
	var n atomic.Int64
	for range 4 {
		wg.Go(func() {
			for {
				slow := n.Add(1)%4 == 0
				if slow {
					link.once.Store(int64(8 * time.Millisecond))
				}
				var d ratelimit.Departure
				if err := far.Wait(run, "e", ratelimit.Live, ratelimit.TakeDeparture(&d)); err != nil {
					return
				}
				if slow {
					time.Sleep(22 * time.Millisecond) // the slow mark: work the caller does, not a wait for a condition
				}
				switch err := d.Leave(run); {
				case errors.Is(err, ratelimit.ErrLate):
					farRefused.Add(1)
					continue
				case err != nil:
					return
				}
				mu.Lock()
				departed = append(departed, time.Now())
				mu.Unlock()
				farUsed.Add(1)
			}
		})
	}
	wg.Wait()
	peak := sandbox.MaxInWindow(departed, time.Second)
	t.Logf("%d departures in 4 s, max %d in a sliding second; far replica: %d used, %d refused at their departure",
		len(departed), peak, farUsed.Load(), farRefused.Load())
	if peak > 20 {
		t.Fatalf("%d departures in one sliding second (limit 20)", peak)
	}
	if farUsed.Load() == 0 {
		t.Fatal("the far replica used none of its grants")
	}
}
