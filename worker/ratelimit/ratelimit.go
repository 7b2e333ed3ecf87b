package ratelimit

import (
	"context"
	"fmt"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Priority orders API calls competing for the same budget.
type Priority int

const (
	// Live: a command's first attempt.
	Live Priority = iota
	// Retry: a retry after a failure, or a released parked command.
	Retry
	// Replay: a command that an operator replayed.
	Replay
	// Probe: a probe of a meeting that has not started. Probes take their
	// share of the budget (ProbeShare) whatever else waits, and no more while
	// anything else waits. (Its value keeps the others' as earlier versions
	// sent them.)
	Probe
)

var priorityNames = [...]string{"live", "retry", "replay", "probe"}

func (p Priority) String() string {
	if p >= 0 && int(p) < len(priorityNames) {
		return priorityNames[p]
	}
	return "unknown"
}

// rank orders priorities for the dispenser: lower first.
func (p Priority) rank() int {
	switch p {
	case Live:
		return 0
	case Retry:
		return 1
	case Probe:
		return 2
	}
	return 3
}

// Limiter grants API calls. Every call to the API takes one grant first.
type Limiter interface {
	// Wait blocks until the enterprise may make one call, or ctx ends.
	Wait(ctx context.Context, enterpriseID string, p Priority, opts ...WaitOption) error
	// Throttled reports that the API answered "rate limited", so that the
	// limiter can slow down.
	Throttled(enterpriseID string)
}

// Local is a per-replica limiter: a token bucket of burst 1 per enterprise. It
// holds the rate for one replica only; use Cluster for several.
type Local struct {
	rate  func(enterpriseID string) float64
	mu    sync.Mutex
	limit map[string]*rate.Limiter
}

// NewLocal limits each enterprise to rateOf(enterpriseID) calls per second.
func NewLocal(rateOf func(enterpriseID string) float64) *Local {
	return &Local{rate: rateOf, limit: map[string]*rate.Limiter{}}
}

func (l *Local) get(enterpriseID string) *rate.Limiter {
	l.mu.Lock()
	defer l.mu.Unlock()
	lim, ok := l.limit[enterpriseID]
	if !ok {
		lim = rate.NewLimiter(rate.Limit(l.rate(enterpriseID)), 1)
		l.limit[enterpriseID] = lim
	}
	return lim
}

// Wait implements Limiter; priorities are not distinguished.
func (l *Local) Wait(ctx context.Context, enterpriseID string, _ Priority, opts ...WaitOption) error {
	r := l.get(enterpriseID).Reserve()
	waitOptionsOf(opts).queued()
	if !r.OK() {
		return fmt.Errorf("ratelimit: no grant possible for %s", enterpriseID)
	}
	d := r.Delay()
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		r.Cancel()
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// Throttled implements Limiter: the next grant waits one more interval.
func (l *Local) Throttled(enterpriseID string) {
	_ = l.get(enterpriseID).Reserve()
}
