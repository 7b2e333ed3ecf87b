package worker

import (
	"errors"
	"sync"
	"time"

	"github.com/rs/zerolog"
	"github.com/sony/gobreaker/v2"

	"github.com/xygroup/xygroup/xylink"
)

// ErrBreakerOpen: the tenant's breaker is open; the call was not made.
var ErrBreakerOpen = errors.New("the circuit breaker of this enterprise is open: its API kept failing")

// BreakerSettings tune the cluster-wide breaker and its per-replica part.
type BreakerSettings struct {
	// ConsecutiveFailures that open the breaker (default 5).
	ConsecutiveFailures uint32
	// OpenFor is how long it stays open before one probe (default 10 s).
	OpenFor time.Duration
	// CredentialsRetry: how often a tenant whose credentials were refused is
	// tried again (default 30 s; the shared breaker only).
	CredentialsRetry time.Duration
	// OnChange is told of every state change.
	OnChange func(enterpriseID, from, to string)
}

// localBreaker is a gobreaker two-step breaker per tenant: the per-replica part
// of SharedBreaker. Failures are
// unavailable answers (5xx, timeouts, network); business answers (66620, 66684,
// 66685, other 4xx) prove the API alive; rate-limit and credential answers say
// nothing about its health and are excluded.
type localBreaker struct {
	settings BreakerSettings
	log      zerolog.Logger
	mu       sync.Mutex
	byTenant map[string]*gobreaker.TwoStepCircuitBreaker[struct{}]
}

var (
	errCallFailed   = errors.New("api unavailable")
	errCallExcluded = errors.New("excluded from breaker counts")
)

// newLocalBreaker returns a per-replica breaker.
func newLocalBreaker(s BreakerSettings, log zerolog.Logger) *localBreaker {
	if s.ConsecutiveFailures == 0 {
		s.ConsecutiveFailures = 5
	}
	if s.OpenFor == 0 {
		s.OpenFor = 10 * time.Second
	}
	return &localBreaker{settings: s, log: log, byTenant: map[string]*gobreaker.TwoStepCircuitBreaker[struct{}]{}}
}

func (b *localBreaker) get(enterpriseID string) *gobreaker.TwoStepCircuitBreaker[struct{}] {
	b.mu.Lock()
	defer b.mu.Unlock()
	cb, ok := b.byTenant[enterpriseID]
	if !ok {
		n := b.settings.ConsecutiveFailures
		cb = gobreaker.NewTwoStepCircuitBreaker[struct{}](gobreaker.Settings{
			Name:        enterpriseID,
			MaxRequests: 1,
			Timeout:     b.settings.OpenFor,
			ReadyToTrip: func(c gobreaker.Counts) bool { return c.ConsecutiveFailures >= n },
			IsExcluded:  func(err error) bool { return errors.Is(err, errCallExcluded) },
			OnStateChange: func(name string, from, to gobreaker.State) {
				b.log.Warn().Str("enterpriseId", name).Str("from", from.String()).Str("to", to.String()).Msg("circuit breaker")
				if b.settings.OnChange != nil {
					b.settings.OnChange(name, from.String(), to.String())
				}
			},
		})
		b.byTenant[enterpriseID] = cb
	}
	return cb
}

// Allow asks to make one call. When allowed, done must be called with the
// call's outcome; otherwise the error is ErrBreakerOpen.
func (b *localBreaker) Allow(enterpriseID string) (func(xylink.Outcome), error) {
	done, err := b.get(enterpriseID).Allow()
	if err != nil {
		return nil, ErrBreakerOpen
	}
	return func(o xylink.Outcome) {
		switch {
		case o.BreakerExcluded:
			done(errCallExcluded)
		case o.BreakerFailure:
			done(errCallFailed)
		default:
			done(nil)
		}
	}, nil
}

// State is "closed", "half-open" or "open".
func (b *localBreaker) State(enterpriseID string) string { return b.get(enterpriseID).State().String() }
