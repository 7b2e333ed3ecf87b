package ratelimit

import (
	"time"

	"github.com/rs/zerolog"
)

// Options tune a Cluster limiter; zero values take the defaults in brackets.
type Options struct {
	// Rate is each enterprise's calls per second [20].
	Rate func(enterpriseID string) float64
	// Guard widens the window grants are spaced over [25 ms; at least
	// MinGuard]: grants are
	// (1 s + guard) / rate apart, where guard starts here, its floor, and
	// learns per enterprise: each rate-limit answer widens it by GuardStep
	// (answers within GuardCooldown of a widening count once), and every
	// GuardQuiet without one narrows it by GuardStep/5, back to the floor.
	Guard time.Duration
	// GuardStep, GuardCooldown, GuardQuiet, GuardMax [25 ms, 2 s, 30 s, 1 s].
	GuardStep, GuardCooldown, GuardQuiet, GuardMax time.Duration
	// LeaseTTL, RenewEvery, StopAfter: the dispenser's lease [3 s, 500 ms, 1.5 s].
	LeaseTTL, RenewEvery, StopAfter time.Duration
	// ProbeShare: probes of waiting meetings get up to this share of an
	// enterprise's grants whatever else waits, and no more while anything
	// else waits [0.5].
	ProbeShare float64
	// MaxQueueWait: a request waiting longer is answered "ask again" [4 s].
	MaxQueueWait time.Duration
	// Shards: enterprises are spread over this many dispensers, each behind
	// its own lease [16]. Every replica of a cluster must use the same number:
	// a replica whose number differs from the cluster's takes no shard and
	// gets no grant (see the package documentation).
	Shards int
	// Replicas of the bucket [1].
	Replicas int
	// Name of this replica, in the lease and logs.
	Name string
	// Now is this replica's clock [time.Now]; tests inject offsets.
	Now func() time.Time
	Log zerolog.Logger
}

// MinGuard is the least Guard: half of what a guard leaves beyond
// maxCatchUp is the departures' budget (see Departure), and a guard of
// maxCatchUp or less would leave none, so that no grant could be used.
const MinGuard = 5 * time.Millisecond

// DefaultShards is the number of shards when Options.Shards is not set.
const DefaultShards = 16

func (o *Options) defaults() {
	if o.Rate == nil {
		o.Rate = func(string) float64 { return 20 }
	}
	if o.Guard <= 0 {
		o.Guard = 25 * time.Millisecond
	}
	o.Guard = max(o.Guard, MinGuard)
	if o.LeaseTTL <= 0 {
		o.LeaseTTL = 3 * time.Second
	}
	if o.RenewEvery <= 0 {
		o.RenewEvery = 500 * time.Millisecond
	}
	if o.StopAfter <= 0 {
		o.StopAfter = 1500 * time.Millisecond
	}
	if o.GuardStep <= 0 {
		o.GuardStep = 25 * time.Millisecond
	}
	if o.GuardCooldown <= 0 {
		o.GuardCooldown = 2 * time.Second
	}
	if o.GuardQuiet <= 0 {
		o.GuardQuiet = 30 * time.Second
	}
	if o.GuardMax <= 0 {
		o.GuardMax = time.Second
	}
	if o.ProbeShare <= 0 || o.ProbeShare > 1 {
		o.ProbeShare = 0.5
	}
	if o.MaxQueueWait <= 0 {
		o.MaxQueueWait = 4 * time.Second
	}
	if o.Shards <= 0 {
		o.Shards = DefaultShards
	}
	if o.Replicas <= 0 {
		o.Replicas = 1
	}
	if o.Now == nil {
		o.Now = time.Now
	}
}
