package worker

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"os"
	"sort"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/xygroup/xygroup/worker/contract"
)

// BucketReplicas holds a heartbeat per running replica; an entry expires 15 s
// after its replica's last heartbeat.
const BucketReplicas = contract.BucketReplicas

// Replica is one worker's heartbeat.
type Replica struct {
	Name      string    `json:"name"`
	Host      string    `json:"host"`
	StartedAt time.Time `json:"startedAt"`
	// InFlight: commands this replica is handling now (from the shared
	// consumer or a lane), and Background: its slots held by probes and
	// released commands being let out; both of Concurrency slots, as of SeenAt.
	InFlight    int       `json:"inFlight"`
	Background  int       `json:"background"`
	Concurrency int       `json:"concurrency"`
	Dispenser   bool      `json:"dispenser"`
	SeenAt      time.Time `json:"seenAt"`
	// DefaultEnterprise is the tenant of the commands that name none, for
	// tools that look such a command's record up (publish --wait).
	DefaultEnterprise string `json:"defaultEnterprise,omitempty"`
}

// replicasBucket holds the heartbeats: in memory, they expire by themselves.
func replicasBucket(replicas int) jetstream.KeyValueConfig {
	return jetstream.KeyValueConfig{Bucket: BucketReplicas, Description: "xygroup: replicas alive",
		History: 1, TTL: 15 * time.Second, Storage: jetstream.MemoryStorage, Replicas: replicas,
		MaxBytes: 16 << 20, MaxValueSize: smallRecordBytes}
}

// heartbeat writes this replica's heartbeat every 5 s into kv (opened by
// setup). The bucket is in memory: when a write fails because NATS lost it (a
// restart of its server), it is created again. Beside it, the server watch
// writes the last heartbeat again every second, its test of this replica's
// NATS server (servermove.go).
func (w *Worker) heartbeat(ctx context.Context, kv jetstream.KeyValue, replicas int) {
	var b [4]byte
	_, _ = rand.Read(b[:])
	host, _ := os.Hostname()
	key := "r." + hex.EncodeToString(b[:])
	me := Replica{Name: w.opts.source + "/" + hex.EncodeToString(b[:]), Host: host, StartedAt: time.Now().UTC(), Concurrency: w.opts.concurrency,
		DefaultEnterprise: w.opts.defaultEnterprise}
	var last atomic.Value // the last heartbeat
	write := func(ctx context.Context, js jetstream.JetStream) error {
		v, ok := last.Load().([]byte)
		if !ok {
			return nil
		}
		kv, err := js.KeyValue(ctx, BucketReplicas)
		if err != nil {
			return err
		}
		_, err = kv.Put(ctx, key, v)
		return err
	}
	go newServerWatch(w.nc, w.log, write, w.opts.metrics.ServerMoves.Inc).run(ctx, w.js)
	tick := time.NewTicker(5 * time.Second)
	defer tick.Stop()
	for {
		me.InFlight, me.Background = int(w.handling.Load()), len(w.slots.background)
		me.Dispenser = w.limiter != nil && w.limiter.Stats().Dispensing
		me.SeenAt = time.Now().UTC()
		v, _ := json.Marshal(me)
		last.Store(v)
		if _, err := kv.Put(ctx, key, v); err != nil && ctx.Err() == nil {
			if again, rerr := reopenBucket(ctx, w.js, replicasBucket(replicas), w.log); rerr == nil {
				kv = again
				_, _ = kv.Put(ctx, key, v)
			}
		}
		w.countReplicas(ctx, kv)
		select {
		case <-ctx.Done():
			dctx, cancel := context.WithTimeout(context.Background(), time.Second)
			_ = kv.Delete(dctx, key)
			cancel()
			return
		case <-tick.C:
		}
	}
}

// Replicas lists the replicas alive (heartbeat in the last 15 s).
func Replicas(ctx context.Context, js jetstream.JetStream) ([]Replica, error) {
	byKey, err := readBucket[Replica](ctx, js, BucketReplicas)
	if err != nil {
		return nil, err
	}
	out := make([]Replica, 0, len(byKey))
	for _, r := range byKey {
		out = append(out, r)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// Breakers lists the tenants' shared circuit breakers.
func Breakers(ctx context.Context, js jetstream.JetStream) ([]BreakerState, error) {
	byKey, err := readBucket[breakerRecord](ctx, js, BucketBreakers)
	if err != nil {
		return nil, err
	}
	out := make([]BreakerState, 0, len(byKey))
	for _, r := range byKey {
		out = append(out, BreakerState{EnterpriseID: r.EnterpriseID, State: r.State, Failures: r.Failures, OpenUntil: r.OpenUntil, Opens: r.Opens,
			Reason: r.Reason, OpenedAt: r.OpenedAt, LastFailure: r.LastFailure})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].EnterpriseID < out[j].EnterpriseID })
	return out, nil
}

// BreakerState is one tenant's breaker, for `xygroup status`.
type BreakerState struct {
	EnterpriseID string    `json:"enterpriseId"`
	State        string    `json:"state"`
	Failures     int       `json:"failures"`
	OpenUntil    time.Time `json:"openUntil,omitzero"`
	Opens        int       `json:"opens"`
	// Reason an open breaker holds the tenant: "api" (its calls failed) or
	// "credentials" (XYLink refused its keys); LastFailure names the last
	// answer counted against it.
	Reason      string    `json:"reason,omitempty"`
	OpenedAt    time.Time `json:"openedAt,omitzero"`
	LastFailure string    `json:"lastFailure,omitempty"`
}

// countReplicas counts the heartbeats, for each replica's share of a tenant's
// budget (see lanes.go).
func (w *Worker) countReplicas(ctx context.Context, kv jetstream.KeyValue) {
	lctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	keys, err := kv.ListKeys(lctx)
	if err != nil {
		return
	}
	n := int64(0)
	for range keys.Keys() {
		n++
	}
	if n > 0 {
		w.replicaN.Store(n)
	}
}
