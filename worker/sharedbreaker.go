package worker

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/xygroup/xygroup/xylink"
)

// BucketBreakers holds one record per tenant: the cluster-wide count of
// consecutive failures and, once it reaches the threshold, until when the tenant
// is open. Every replica watches it, so all stop calling a failing tenant within
// the watch's delivery time (milliseconds), not each after its own failures.
const BucketBreakers = "xygroup-breakers"

// Breaker states, as shared.
const (
	breakerClosed = "closed"
	breakerOpen   = "open"
)

type breakerRecord struct {
	EnterpriseID string    `json:"enterpriseId"`
	State        string    `json:"state"`
	Failures     int       `json:"failures"`
	OpenedAt     time.Time `json:"openedAt,omitzero"`
	OpenUntil    time.Time `json:"openUntil,omitzero"`
	Opens        int       `json:"opens"`
	// Reason: "api" (failures) or "credentials" (XYLink refused the tenant's keys).
	Reason string `json:"reason,omitempty"`
	// LastFailure names the last answer counted against the breaker (the
	// classification table's row, e.g. "http 503").
	LastFailure string `json:"lastFailure,omitempty"`
	// ProbingUntil: one replica's half-open probe is in flight until then.
	ProbingUntil time.Time `json:"probingUntil,omitzero"`
	// Generation changes when the breaker closes, so that replicas reset their
	// own gobreaker too.
	Generation int `json:"generation"`
}

func breakerKey(enterpriseID string) string {
	h := sha256.Sum256([]byte(enterpriseID))
	return "b." + hex.EncodeToString(h[:12])
}

// SharedBreaker is a gobreaker per replica and tenant whose opening is shared:
// failures are counted cluster-wide, and an open tenant is open on every replica.
// While open, calls are refused (the pipeline holds the tenant's commands) and
// one probe across the cluster (the prober's claim) decides: its success closes
// the tenant everywhere, its failure keeps it open for another OpenFor.
type SharedBreaker struct {
	kv        jetstream.KeyValue
	threshold int
	openFor   time.Duration
	// credentialsRetry: how often held credentials are checked again.
	credentialsRetry time.Duration
	now              func() time.Time
	log              zerolog.Logger
	onChange         func(enterpriseID, state string)

	mu     sync.Mutex
	local  map[string]*localBreaker // per tenant, replaced when the shared generation changes
	gens   map[string]int
	shared map[string]breakerRecord // watched
}

// NewSharedBreaker opens (creating when missing) the breakers bucket and watches it until ctx ends.
func NewSharedBreaker(ctx context.Context, js jetstream.JetStream, replicas int, s BreakerSettings, log zerolog.Logger) (*SharedBreaker, error) {
	if s.ConsecutiveFailures == 0 {
		s.ConsecutiveFailures = 5
	}
	if s.OpenFor == 0 {
		s.OpenFor = 10 * time.Second
	}
	if s.CredentialsRetry == 0 {
		s.CredentialsRetry = CredentialsRetry
	}
	kv, err := ensureBucket(ctx, js, jetstream.KeyValueConfig{Bucket: BucketBreakers, Description: "xygroup: circuit breakers per tenant",
		History: 1, Storage: jetstream.FileStorage, Replicas: replicas, MaxBytes: 64 << 20, MaxValueSize: smallRecordBytes}, log)
	if err != nil {
		return nil, err
	}
	b := &SharedBreaker{kv: kv, threshold: int(s.ConsecutiveFailures), openFor: s.OpenFor, credentialsRetry: s.CredentialsRetry, now: time.Now, log: log,
		onChange: func(ent, state string) {
			if s.OnChange != nil {
				s.OnChange(ent, "", state)
			}
		}, local: map[string]*localBreaker{}, gens: map[string]int{}, shared: map[string]breakerRecord{}}
	if err := watchBucket(ctx, kv, b.seen, func(string) {}); err != nil {
		return nil, fmt.Errorf("watch %s: %w", BucketBreakers, err)
	}
	return b, nil
}

// seen takes in a tenant's shared state and logs a transition once.
func (b *SharedBreaker) seen(_ string, value []byte, _ uint64) {
	var r breakerRecord
	if json.Unmarshal(value, &r) != nil {
		return
	}
	b.mu.Lock()
	prev, had := b.shared[r.EnterpriseID]
	b.shared[r.EnterpriseID] = r
	b.mu.Unlock()
	if (!had && r.State == breakerOpen) || (had && prev.State != r.State) {
		// One line per transition, on each replica.
		ev := b.log.Warn()
		if r.State == breakerClosed {
			ev = b.log.Info()
		}
		ev.Str("enterpriseId", r.EnterpriseID).Str("state", r.State).Str("reason", r.Reason).Time("openUntil", r.OpenUntil).
			Int("failures", r.Failures).Msg("circuit breaker (cluster-wide)")
		if b.onChange != nil {
			b.onChange(r.EnterpriseID, r.State)
		}
	}
}

// localFor returns this replica's gobreaker for the tenant, fresh after the
// shared breaker closed.
func (b *SharedBreaker) localFor(enterpriseID string) *localBreaker {
	b.mu.Lock()
	defer b.mu.Unlock()
	gen := b.shared[enterpriseID].Generation
	l, ok := b.local[enterpriseID]
	if !ok || b.gens[enterpriseID] != gen {
		l = newLocalBreaker(BreakerSettings{ConsecutiveFailures: uint32(b.threshold), OpenFor: b.openFor,
			OnChange: func(ent, _, to string) {
				if to == "open" {
					go b.trip(context.Background(), ent, "this replica's breaker opened")
				}
			}}, b.log)
		b.local[enterpriseID], b.gens[enterpriseID] = l, gen
	}
	return l
}

// Open reports whether the tenant is open cluster-wide, and until when.
func (b *SharedBreaker) Open(enterpriseID string) (time.Time, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	r, ok := b.shared[enterpriseID]
	return r.OpenUntil, ok && r.State == breakerOpen
}

// Allow asks to make one call. When allowed, done must be called with the
// call's outcome; otherwise the error is ErrBreakerOpen.
func (b *SharedBreaker) Allow(enterpriseID string) (func(xylink.Outcome), error) {
	if _, open := b.Open(enterpriseID); open {
		return nil, ErrBreakerOpen
	}
	done, err := b.localFor(enterpriseID).Allow(enterpriseID)
	if err != nil {
		return nil, err
	}
	return func(o xylink.Outcome) {
		done(o)
		b.report(enterpriseID, o)
	}, nil
}

// report counts a failure cluster-wide, or clears the count after a success.
func (b *SharedBreaker) report(enterpriseID string, o xylink.Outcome) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	switch {
	case o.BreakerExcluded:
		// Nothing learnt (the probe was not sent, or was cut off by our own
		// stop): give the claim back, so that another replica probes now
		// instead of after the claim's lease.
		_ = b.update(ctx, enterpriseID, func(r *breakerRecord) bool {
			if r.ProbingUntil.IsZero() {
				return false
			}
			r.ProbingUntil = time.Time{}
			return true
		})
	case o.BreakerFailure:
		_ = b.update(ctx, enterpriseID, func(r *breakerRecord) bool {
			if r.State == breakerOpen {
				return false
			}
			r.Failures++
			r.LastFailure = o.Rule
			if r.Failures >= b.threshold {
				b.open(r)
			}
			return true
		})
	default:
		b.mu.Lock()
		failures := b.shared[enterpriseID].Failures
		b.mu.Unlock()
		if failures > 0 { // a write only when there is a count to clear
			_ = b.update(ctx, enterpriseID, func(r *breakerRecord) bool {
				if r.State == breakerOpen || r.Failures == 0 {
					return false
				}
				r.Failures = 0
				return true
			})
		}
	}
}

func (b *SharedBreaker) open(r *breakerRecord) {
	now := b.now()
	r.State, r.OpenedAt, r.OpenUntil, r.Reason = breakerOpen, now, now.Add(b.openFor), "api"
	r.Opens++
}

// CredentialsRetry is how often, by default, a tenant whose credentials were
// refused is tried again.
const CredentialsRetry = 30 * time.Second

// HoldForCredentials stops every replica from calling a tenant whose credentials
// XYLink refused: its commands are held (queued, not failed) and one probe every
// CredentialsRetry checks the credentials again.
func (b *SharedBreaker) HoldForCredentials(ctx context.Context, enterpriseID string) {
	_ = b.update(ctx, enterpriseID, func(r *breakerRecord) bool {
		now := b.now()
		r.State, r.OpenUntil, r.Reason, r.ProbingUntil = breakerOpen, now.Add(b.credentialsRetry), "credentials", time.Time{}
		if r.OpenedAt.IsZero() || r.Opens == 0 {
			r.OpenedAt = now
		}
		r.Opens++
		return true
	})
}

// trip opens the tenant cluster-wide.
func (b *SharedBreaker) trip(ctx context.Context, enterpriseID, why string) {
	_ = b.update(ctx, enterpriseID, func(r *breakerRecord) bool {
		if r.State == breakerOpen {
			return false
		}
		b.open(r)
		return true
	})
}

// ClaimProbe makes this replica's next call the tenant's one half-open probe
// across the cluster, if the open period is over and no other probe is in flight.
func (b *SharedBreaker) ClaimProbe(ctx context.Context, enterpriseID string) bool {
	won := false
	_ = b.update(ctx, enterpriseID, func(r *breakerRecord) bool {
		now := b.now()
		if r.State != breakerOpen || now.Before(r.OpenUntil) || now.Before(r.ProbingUntil) {
			return false
		}
		r.ProbingUntil = now.Add(probeLease)
		won = true
		return true
	})
	return won
}

// ProbeResult records the half-open probe's outcome: success (any answer that
// proves the API alive) closes the tenant everywhere; a failure keeps it open for
// another OpenFor. Excluded answers (rate limits, credentials) leave it as it is.
func (b *SharedBreaker) ProbeResult(ctx context.Context, enterpriseID string, o xylink.Outcome) {
	switch {
	case o.Disposition == xylink.StopTenant:
		b.HoldForCredentials(ctx, enterpriseID)
	case o.BreakerExcluded:
		// Nothing learnt (the probe was not sent, or was cut off by our own
		// stop): give the claim back, so that another replica probes now
		// instead of after the claim's lease.
		_ = b.update(ctx, enterpriseID, func(r *breakerRecord) bool {
			if r.ProbingUntil.IsZero() {
				return false
			}
			r.ProbingUntil = time.Time{}
			return true
		})
	case o.BreakerFailure:
		_ = b.update(ctx, enterpriseID, func(r *breakerRecord) bool {
			b.open(r)
			r.ProbingUntil, r.LastFailure = time.Time{}, o.Rule
			return true
		})
	default:
		_ = b.update(ctx, enterpriseID, func(r *breakerRecord) bool {
			if r.State == breakerClosed && r.Failures == 0 {
				return false
			}
			r.State, r.Failures, r.OpenUntil, r.ProbingUntil, r.Reason = breakerClosed, 0, time.Time{}, time.Time{}, ""
			r.Generation++
			return true
		})
	}
}

// State is "open" while the tenant is open cluster-wide, else this replica's
// gobreaker's state ("closed", "half-open" or "open").
func (b *SharedBreaker) State(enterpriseID string) string {
	if _, open := b.Open(enterpriseID); open {
		return "open"
	}
	return b.localFor(enterpriseID).State(enterpriseID)
}

// States lists every tenant's shared state.
func (b *SharedBreaker) States() map[string]breakerRecord {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make(map[string]breakerRecord, len(b.shared))
	for k, v := range b.shared {
		out[k] = v
	}
	return out
}

func (b *SharedBreaker) update(ctx context.Context, enterpriseID string, f func(*breakerRecord) bool) error {
	_, err := casUpdate(ctx, b.kv, breakerKey(enterpriseID), &breakerRecord{EnterpriseID: enterpriseID, State: breakerClosed},
		func(r *breakerRecord) (bool, error) { return f(r), nil })
	return err
}
