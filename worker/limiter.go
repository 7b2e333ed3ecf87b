package worker

import (
	"context"
	"sync"

	"golang.org/x/time/rate"
)

// Priority orders API calls competing for the same budget.
type Priority int

const (
	// PriorityLive: a command's first attempt.
	PriorityLive Priority = iota
	// PriorityRetry: a retry after a failure, or a probe of a parked command.
	PriorityRetry
	// PriorityReplay: a command that an operator replayed.
	PriorityReplay
)

var priorityNames = [...]string{"live", "retry", "replay"}

func (p Priority) String() string {
	if int(p) < len(priorityNames) {
		return priorityNames[p]
	}
	return "unknown"
}

// Limiter grants API calls. Every call to the API takes one grant first.
type Limiter interface {
	// Wait blocks until the enterprise may make one call, or ctx ends.
	Wait(ctx context.Context, enterpriseID string, p Priority) error
	// Throttled reports that the API answered "rate limited", so that the
	// limiter can slow down.
	Throttled(enterpriseID string)
}

// LocalLimiter is a per-replica limiter: a token bucket of burst 1 per
// enterprise. It holds the rate only for a single replica; see the cluster-wide
// limiter for several.
type LocalLimiter struct {
	rate  func(enterpriseID string) float64
	mu    sync.Mutex
	limit map[string]*rate.Limiter
}

// NewLocalLimiter limits each enterprise to rateOf(enterpriseID) calls per second.
func NewLocalLimiter(rateOf func(enterpriseID string) float64) *LocalLimiter {
	return &LocalLimiter{rate: rateOf, limit: map[string]*rate.Limiter{}}
}

func (l *LocalLimiter) get(enterpriseID string) *rate.Limiter {
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
func (l *LocalLimiter) Wait(ctx context.Context, enterpriseID string, _ Priority) error {
	return l.get(enterpriseID).Wait(ctx)
}

// Throttled implements Limiter: the next grant waits one more interval.
func (l *LocalLimiter) Throttled(enterpriseID string) {
	lim := l.get(enterpriseID)
	_ = lim.Reserve() // pushes the next grant one interval later
}
