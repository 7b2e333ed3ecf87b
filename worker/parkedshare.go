package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
)

// Tenant shares of the parked stream: each tenant's parked commands may hold
// at most a share of the stream's MaxBytes, so that one publisher (far-future
// commands, a meeting that never starts) cannot fill it for every tenant.
//
// A record per tenant in the xygroup-parked-shares bucket tallies the bytes
// its parked commands hold, shared by every replica and written by
// compare-and-swap: a command taken from the commands stream reserves its
// bytes before it is stored (refused over_quota when they do not fit), a
// move within the parked stream (hold to meeting, lane to hold) charges its
// new copy without the check, and a parked copy's bytes are given back once
// it is removed. A replica that dies between a store and its tally, or
// between a removal and its give-back, leaves the tally off; reconcile sets
// a tally that has not moved for a round to what the stream holds.
const (
	BucketParkedShares = "xygroup-parked-shares"
	// DefaultParkedTenantShare: a tenant holds at most a tenth of the parked
	// stream, which leaves room for many tenants' waiting meetings.
	DefaultParkedTenantShare = 0.1
	// parkedOverhead is charged per parked copy beside its payload: its
	// headers and the store's per-message overhead.
	parkedOverhead = 1 << 10
)

func parkedSharesBucket(replicas int) jetstream.KeyValueConfig {
	return jetstream.KeyValueConfig{Bucket: BucketParkedShares, Description: "xygroup: bytes each tenant's parked commands hold",
		History: 1, Storage: jetstream.FileStorage, Replicas: replicas, MaxBytes: 16 << 20, MaxValueSize: smallRecordBytes} // a record per tenant
}

// shareRecord is a tenant's tally of parked bytes and copies.
type shareRecord struct {
	EnterpriseID string `json:"enterpriseId"`
	Bytes        int64  `json:"bytes"`
	Count        int64  `json:"count"`
}

// errOverQuota: the tenant's parked commands hold its share already.
var errOverQuota = errors.New("the tenant's share of the parked stream is full")

// parkedShares keeps the tenants' tallies.
type parkedShares struct {
	kv    jetstream.KeyValue
	limit func() int64 // a tenant's share in bytes (0: unbounded)
	log   zerolog.Logger

	mu   sync.Mutex
	seen map[string]uint64 // tally key → revision at the last reconcile round
}

func shareKey(enterpriseID string) string { return meetingToken(enterpriseID, "\x03parked-share") }

// parkedBytes is what a parked copy of a command costs its tenant.
func parkedBytes(data []byte) int64 { return int64(len(data)) + parkedOverhead }

// reserve adds a copy of n bytes to the tenant's tally; checked, it refuses
// (errOverQuota) when the tally would pass the tenant's share.
func (s *parkedShares) reserve(ctx context.Context, enterpriseID string, n int64, checked bool) error {
	if s == nil || s.kv == nil {
		return nil
	}
	limit := s.limit()
	return s.update(ctx, enterpriseID, func(r *shareRecord) error {
		if checked && limit > 0 && r.Bytes+n > limit {
			return fmt.Errorf("%w: %d bytes parked, %d more would pass %d", errOverQuota, r.Bytes, n, limit)
		}
		r.Bytes += n
		r.Count++
		return nil
	})
}

// giveBack takes a removed copy of n bytes off the tenant's tally.
func (s *parkedShares) giveBack(ctx context.Context, enterpriseID string, n int64) {
	if s == nil || s.kv == nil {
		return
	}
	err := s.update(ctx, enterpriseID, func(r *shareRecord) error {
		r.Bytes, r.Count = max(0, r.Bytes-n), max(0, r.Count-1)
		return nil
	})
	if err != nil {
		// Counted still: the tenant is refused early until reconcile corrects it.
		s.log.Warn().Err(err).Str("enterpriseId", enterpriseID).Msg("parked share not given back; reconciled later")
	}
}

// update applies f to the tenant's tally by compare-and-swap.
func (s *parkedShares) update(ctx context.Context, enterpriseID string, f func(*shareRecord) error) error {
	key := shareKey(enterpriseID)
	for try := 0; ; try++ {
		r := shareRecord{EnterpriseID: enterpriseID}
		var rev uint64
		e, err := s.kv.Get(ctx, key)
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound):
		case err != nil:
			return fmt.Errorf("parked share: %w", err)
		default:
			rev = e.Revision()
			if err := json.Unmarshal(e.Value(), &r); err != nil {
				r = shareRecord{EnterpriseID: enterpriseID} // unreadable: reconcile rewrites it
			}
		}
		if err := f(&r); err != nil {
			return err
		}
		b, _ := json.Marshal(r)
		if rev == 0 {
			_, err = s.kv.Create(ctx, key, b)
		} else {
			_, err = s.kv.Update(ctx, key, b, rev)
		}
		if err == nil {
			return nil
		}
		if !(errors.Is(err, jetstream.ErrKeyExists) || strings.Contains(err.Error(), "wrong last sequence")) || try > 50 {
			return fmt.Errorf("parked share: %w", err)
		}
		if err := ctx.Err(); err != nil {
			return err
		}
	}
}

// get reads a tenant's tally (zero when it has none).
func (s *parkedShares) get(ctx context.Context, enterpriseID string) (shareRecord, error) {
	e, err := s.kv.Get(ctx, shareKey(enterpriseID))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return shareRecord{EnterpriseID: enterpriseID}, nil
	}
	if err != nil {
		return shareRecord{}, err
	}
	var r shareRecord
	err = json.Unmarshal(e.Value(), &r)
	return r, err
}

// reconcile sets each tally that has not moved since the last round to what
// the parked stream holds for its tenant, when the copies it counts differ
// from the stream's: a replica died between a store or a removal and its
// tally. subjects are the parked stream's per-subject counts; tokens names
// the tenant of each meeting's subject.
func (s *parkedShares) reconcile(ctx context.Context, parked jetstream.Stream, subjects map[string]uint64, view *meetingView) {
	if s == nil || s.kv == nil {
		return
	}
	keys, err := s.kv.ListKeys(ctx)
	if err != nil {
		return
	}
	tenantSubjects := map[string][]string{}
	for token, e := range view.all() {
		if e.rec.Kind == kindMeeting {
			tenantSubjects[e.rec.EnterpriseID] = append(tenantSubjects[e.rec.EnterpriseID], parkedSubject(token))
		}
	}
	s.mu.Lock()
	last := s.seen
	s.seen = map[string]uint64{}
	s.mu.Unlock()
	for key := range keys.Keys() {
		e, err := s.kv.Get(ctx, key)
		if err != nil {
			continue
		}
		s.mu.Lock()
		s.seen[key] = e.Revision()
		s.mu.Unlock()
		if last[key] != e.Revision() {
			continue // moved since the last round: a store or removal may be under way
		}
		var r shareRecord
		if json.Unmarshal(e.Value(), &r) != nil || r.EnterpriseID == "" {
			continue
		}
		subs := append([]string{parkedSubject(holdToken(r.EnterpriseID)), parkedSubject(laneToken(r.EnterpriseID))},
			tenantSubjects[r.EnterpriseID]...)
		var n int64
		for _, sub := range subs {
			n += int64(subjects[sub])
		}
		if n == r.Count {
			continue
		}
		fixed := shareRecord{EnterpriseID: r.EnterpriseID}
		if n > 0 {
			if fixed, err = scanShare(ctx, parked, r.EnterpriseID, subs); err != nil {
				continue
			}
		}
		b, _ := json.Marshal(fixed)
		if _, err := s.kv.Update(ctx, key, b, e.Revision()); err == nil {
			s.log.Info().Str("enterpriseId", r.EnterpriseID).Int64("was", r.Bytes).Int64("bytes", fixed.Bytes).
				Msg("parked share reconciled with the parked stream")
		}
	}
}

// scanShare sums the tenant's parked copies under subs.
func scanShare(ctx context.Context, parked jetstream.Stream, enterpriseID string, subs []string) (shareRecord, error) {
	r := shareRecord{EnterpriseID: enterpriseID}
	for _, sub := range subs {
		for next := uint64(1); ; {
			m, err := parked.GetMsg(ctx, next, jetstream.WithGetMsgSubject(sub))
			if errors.Is(err, jetstream.ErrMsgNotFound) {
				break
			}
			if err != nil {
				return r, err
			}
			r.Bytes += parkedBytes(m.Data)
			r.Count++
			next = m.Sequence + 1
		}
	}
	return r, nil
}

// parkedFull reports a park refused for lack of room: the parked stream, or
// a bucket parking writes (the meetings bucket, the shares), is at its
// MaxBytes, or the server's JetStream storage is full.
func parkedFull(err error) bool { return storeFull(err) }

// refusals rate-limits the log of refused parks: one line per tenant and
// reason a minute.
type refusals struct {
	mu   sync.Mutex
	last map[string]time.Time
}

func (r *refusals) due(key string, now time.Time) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.last == nil {
		r.last = map[string]time.Time{}
	}
	if t, ok := r.last[key]; ok && now.Sub(t) < time.Minute {
		return false
	}
	r.last[key] = now
	return true
}
