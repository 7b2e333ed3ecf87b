package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/xygroup/xygroup/worker/jsconfig"
)

// Subjects and bucket of the cluster limiter.
const (
	SubjectGrant     = "xygroup.limiter.grant"
	SubjectThrottled = "xygroup.limiter.throttled"
	Bucket           = "xygroup-limiter"
	leaseKey         = "dispenser"
)

// Cluster is the cluster-wide limiter. Every replica runs one; one of them at a
// time is the dispenser (see the package documentation).
type Cluster struct {
	nc   *nats.Conn
	js   jetstream.JetStream
	cfg  jetstream.KeyValueConfig // the bucket, as created (again) when missing
	opts Options

	mu        sync.Mutex
	kv        jetstream.KeyValue
	disp      *dispenser
	subs      []*nats.Subscription
	lastRenew time.Time
	// lastSeen: when this replica last saw a dispenser (its own lease written,
	// another's lease present, or a grant received).
	lastSeen time.Time
	replies  replies
	transit  transitTimes

	staleGrants, requests, grantsSeen, renewals, elections atomic.Int64
}

// Stats counts this replica's limiter traffic.
type Stats struct {
	Requests   int64 // grant requests sent (each a request and a reply on NATS)
	Grants     int64 // grants received
	Stale      int64 // grants received too late to use (see transitTimes), asked for again
	Renewals   int64 // lease writes while dispenser
	Dispensed  int64 // grants handed out while dispenser
	Elections  int64 // times this replica became the dispenser
	Dispensing bool
}

// Stats returns the counters.
func (c *Cluster) Stats() Stats {
	c.mu.Lock()
	disp := c.disp
	c.mu.Unlock()
	s := Stats{Requests: c.requests.Load(), Grants: c.grantsSeen.Load(), Stale: c.staleGrants.Load(), Renewals: c.renewals.Load(), Elections: c.elections.Load()}
	if disp != nil {
		s.Dispensed, s.Dispensing = disp.granted.Load(), true
	}
	return s
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
		History: 1, TTL: opts.LeaseTTL, Storage: jetstream.MemoryStorage, Replicas: opts.Replicas}
	kv, diffs, err := jsconfig.EnsureBucket(ctx, js, cfg)
	if err != nil {
		return nil, fmt.Errorf("ratelimit: %w", err)
	}
	for _, d := range diffs {
		opts.Log.Warn().Str("bucket", Bucket).Str("difference", d).Msg("existing bucket differs from the default; left as configured")
	}
	c := &Cluster{nc: nc, js: js, cfg: cfg, kv: kv, opts: opts, lastSeen: time.Now()}
	// Until its first grant, a replica's lead comes from its round trip to
	// its NATS server.
	if rtt, err := nc.RTT(); err == nil {
		c.transit.seed(rtt)
	}
	go c.elect(ctx)
	return c, nil
}

// ElectionTime bounds how long the cluster may be without a dispenser in an
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
	c.opts.Log.Warn().Str("bucket", Bucket).Str("replica", c.opts.Name).
		Msg("rate-limit bucket was missing (its NATS server restarted); created it again")
}
