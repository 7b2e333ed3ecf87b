package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"

	"github.com/xygroup/xygroup/worker/jsconfig"
)

// Subjects and bucket of the cluster limiter. Grants are asked for on
// SubjectGrant.<shards>.<shard> and rate-limit answers reported on
// SubjectThrottled.<shards>.<shard> (see ShardOf); SubjectGrant and
// SubjectThrottled themselves are where earlier versions, with one dispenser,
// ask and report.
const (
	SubjectGrant     = "xygroup.limiter.grant"
	SubjectThrottled = "xygroup.limiter.throttled"
	// SubjectElected.<shards>.<shard>: a shard's new dispenser announces
	// itself, and requests waiting on the shard's previous one are sent to
	// it at once (see newDispensers).
	SubjectElected = "xygroup.limiter.elected"
	Bucket         = "xygroup-limiter"
	// legacyKey was the one dispenser's lease; it is now the fence that
	// keeps an earlier version from being elected (see renewFence).
	legacyKey = "dispenser"
	// shardKeyPrefix + shard: a shard's lease; presenceKeyPrefix + id: a
	// replica taking part in the election, rewritten every RenewEvery.
	shardKeyPrefix    = "shard."
	presenceKeyPrefix = "replica."
)

// ShardOf is the shard of an enterprise among shards: FNV-1a of its id,
// modulo shards.
func ShardOf(enterpriseID string, shards int) int {
	h := fnv.New32a()
	_, _ = h.Write([]byte(enterpriseID))
	return int(h.Sum32() % uint32(max(shards, 1)))
}

func shardSubject(base string, shards, shard int) string {
	return base + "." + strconv.Itoa(shards) + "." + strconv.Itoa(shard)
}

// Cluster is the cluster-wide limiter. Every replica runs one; each of the
// Shards shards has one dispenser at a time, on whichever replica holds its
// lease (see the package documentation).
type Cluster struct {
	nc   *nats.Conn
	js   jetstream.JetStream
	cfg  jetstream.KeyValueConfig // the bucket, as created (again) when missing
	opts Options
	id   string // names this replica's presence key

	mu sync.Mutex
	kv jetstream.KeyValue
	// held: the shards this replica dispenses, by shard.
	held map[int]*heldShard
	// fenceAt: when this replica last sent a read of the fence that found it
	// rewritten by this version since (see renewFence); no shard grants
	// StopAfter after it.
	fenceAt time.Time
	// legacy: an earlier version's single dispenser holds the lease: grants
	// are asked of it.
	legacy atomic.Bool
	// mismatch: the fence has another number of shards (logged once).
	mismatch atomic.Bool
	// forward: subscriptions that pass earlier versions' requests on to the
	// shards' dispensers.
	forward []*nats.Subscription
	view    leaseView
	// handovers: the state in quiet leases of shards this replica may take.
	handovers map[int]handoverSeen
	started   time.Time
	// liveSeen and liveSince: the count of live replicas last seen, and
	// since when it held (see handOverAfter).
	liveSeen  int
	liveSince time.Time
	// lastSeen: when this replica last saw a dispenser (the fence or an
	// earlier version's lease present, or a grant received).
	lastSeen time.Time
	replies  replies
	transit  transitTimes
	elected  newDispensers

	staleGrants, requests, grantsSeen, renewals, elections, dispensedBefore, resent atomic.Int64
}

// Stats counts this replica's limiter traffic.
type Stats struct {
	Requests   int64 // grant requests sent (each a request and a reply on NATS)
	Grants     int64 // grants received
	Stale      int64 // grants received too late to use (see transitTimes), asked for again
	Resent     int64 // requests sent again at once to their shard's new dispenser
	Renewals   int64 // shard lease writes
	Dispensed  int64 // grants handed out while dispenser of a shard
	Elections  int64 // times this replica took a shard
	Dispensing bool  // this replica holds a shard
	Shards     int   // the shards it holds
}

// Stats returns the counters.
func (c *Cluster) Stats() Stats {
	s := Stats{Requests: c.requests.Load(), Grants: c.grantsSeen.Load(), Stale: c.staleGrants.Load(), Renewals: c.renewals.Load(),
		Resent: c.resent.Load(), Elections: c.elections.Load(), Dispensed: c.dispensedBefore.Load()}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, h := range c.held {
		s.Dispensed += h.disp.granted.Load()
		s.Shards++
	}
	s.Dispensing = s.Shards > 0
	return s
}

// HeldShards returns the shards this replica dispenses, in order.
func (c *Cluster) HeldShards() []int {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]int, 0, len(c.held))
	for n := range c.held {
		out = append(out, n)
	}
	sort.Ints(out)
	return out
}

// Dispenses reports whether this replica dispenses the enterprise's grants.
func (c *Cluster) Dispenses(enterpriseID string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.held[ShardOf(enterpriseID, c.opts.Shards)] != nil
}

// NewCluster opens (creating when missing) the limiter's bucket and takes part
// in the dispenser election until ctx ends.
func NewCluster(ctx context.Context, nc *nats.Conn, opts Options) (*Cluster, error) {
	opts.defaults()
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	cfg := jetstream.KeyValueConfig{Bucket: Bucket, Description: "xygroup: rate-limit dispenser lease",
		History: 1, TTL: opts.LeaseTTL, Storage: jetstream.MemoryStorage, Replicas: opts.Replicas,
		MaxBytes: 16 << 20, MaxValueSize: 16 << 10} // a lease or presence per shard and replica
	kv, diffs, err := jsconfig.EnsureBucket(ctx, js, cfg)
	if err != nil {
		return nil, fmt.Errorf("ratelimit: %w", err)
	}
	for _, d := range diffs {
		opts.Log.Warn().Str("bucket", Bucket).Str("difference", d).Msg("existing bucket differs from the default; left as configured")
	}
	c := &Cluster{nc: nc, js: js, cfg: cfg, kv: kv, opts: opts, id: nuid.Next(), held: map[int]*heldShard{}, handovers: map[int]handoverSeen{},
		started: time.Now(), lastSeen: time.Now()}
	// Until its first grant, a replica's lead comes from its round trip to
	// its NATS server.
	if rtt, err := nc.RTT(); err == nil {
		c.transit.seed(rtt)
	}
	if err := c.elected.follow(nc, opts.Shards); err != nil {
		return nil, fmt.Errorf("ratelimit: following elections: %w", err)
	}
	// The first round before the first request: whether an earlier
	// version's dispenser is the one to ask.
	c.round(ctx)
	go c.elect(ctx)
	return c, nil
}

// AwaitDispensers returns once every shard has a dispenser (its lease
// written within LeaseTTL), or an earlier version's dispenser is asked, or
// ctx ends.
func (c *Cluster) AwaitDispensers(ctx context.Context) error {
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		if c.legacy.Load() || (c.view.isSynced() && len(c.view.free(c.opts.Shards, c.opts.LeaseTTL)) == 0) {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
}

// ElectionTime bounds how long a shard may be without a dispenser in an
// ordinary failover: the dead dispenser's lease expires (LeaseTTL after its
// last renewal), the next election tick (RenewEvery) elects another, and
// StopAfter leaves room for a slow round trip.
func (c *Cluster) ElectionTime() time.Duration {
	return c.opts.LeaseTTL + c.opts.RenewEvery + c.opts.StopAfter
}

// Ready reports an error while this replica has seen no dispenser for longer
// than an election takes: no grant can be given, so no API call made.
func (c *Cluster) Ready() error {
	c.mu.Lock()
	since := time.Since(c.lastSeen)
	c.mu.Unlock()
	if since > c.ElectionTime() {
		return fmt.Errorf("no rate-limit dispenser for %s (an election takes at most %s): no API call can be made",
			since.Round(100*time.Millisecond), c.ElectionTime())
	}
	return nil
}

func (c *Cluster) seen() {
	c.mu.Lock()
	c.lastSeen = time.Now()
	c.mu.Unlock()
}

func (c *Cluster) bucket() jetstream.KeyValue {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.kv
}

// reopen runs after a lease write failed for a reason other than the lease
// itself. The bucket is in memory: a restart of the NATS server that held it
// loses it, and without it no dispenser can ever be elected again. When NATS
// says it does not exist, it is created again with the same settings. (A
// lookup that fails otherwise, NATS being away, changes nothing: the next tick
// tries again.)
func (c *Cluster) reopen(parent context.Context) {
	// The failed write may have used up its context (a publish to a stream that
	// is gone waits for responders until it ends).
	ctx, cancel := context.WithTimeout(parent, c.opts.RenewEvery)
	defer cancel()
	_, err := c.js.KeyValue(ctx, Bucket)
	if !errors.Is(err, jetstream.ErrBucketNotFound) {
		return
	}
	kv, err := c.js.CreateKeyValue(ctx, c.cfg)
	if errors.Is(err, jetstream.ErrBucketExists) || errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
		kv, err = c.js.KeyValue(ctx, Bucket) // another replica was quicker
	}
	if err != nil {
		c.opts.Log.Warn().Err(err).Str("bucket", Bucket).Msg("rate-limit bucket missing; creating it failed, trying again")
		return
	}
	c.mu.Lock()
	c.kv = kv
	c.mu.Unlock()
	c.view.restart()
	c.opts.Log.Warn().Str("bucket", Bucket).Str("replica", c.opts.Name).
		Msg("rate-limit bucket was missing (its NATS server restarted); created it again")
}
