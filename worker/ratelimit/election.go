package ratelimit

import (
	"context"
	"encoding/json"
	"errors"
	"math/rand/v2"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// heldShard is a shard this replica dispenses.
type heldShard struct {
	n    int
	disp *dispenser
	subs []*nats.Subscription
	rev  uint64
	// lastRenew: when the last successful write of its lease was sent (not
	// answered): the lease runs LeaseTTL from a moment after it.
	lastRenew time.Time
}

// handoverSeen is a shard's handed-over state as read from its lease once
// the lease went quiet, and the lease's revision then.
type handoverSeen struct {
	rev   uint64
	state map[string]Handover
}

func shardKey(n int) string { return shardKeyPrefix + strconv.Itoa(n) }

// elect takes part in the election of every shard's dispenser until ctx ends:
// every RenewEvery it marks this replica present, renews the fence and the
// leases it holds, and takes or hands over shards so that each replica holds
// about Shards / (live replicas).
func (c *Cluster) elect(ctx context.Context) {
	tick := time.NewTicker(c.opts.RenewEvery)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			c.stepDownAll("stopping", true)
			c.view.stop()
			c.unforward()
			return
		case <-tick.C:
		}
		c.round(ctx)
	}
}

func (c *Cluster) round(ctx context.Context) {
	kv := c.bucket()
	c.view.ensure(ctx, kv, c.opts.LeaseTTL)
	// The presence, the fence and the leases are written at once, each given
	// until StopAfter: on a loaded host or NATS server a write can take most
	// of a second, and one slow write must not use up the others' time. A
	// write counts from its sending, so one answered late still renews.
	opCtx, cancel := context.WithTimeout(ctx, c.opts.StopAfter)
	defer cancel()
	var wg sync.WaitGroup
	wg.Go(func() {
		if _, err := kv.Put(opCtx, presenceKeyPrefix+c.id, []byte(c.opts.Name)); err != nil && ctx.Err() == nil {
			c.reopen(ctx)
		}
	})
	wg.Go(func() { c.renewFence(opCtx, kv) })
	wg.Go(func() { c.renewShards(opCtx, kv) })
	wg.Wait()
	// Without the fence rewritten for StopAfter the shards grant nothing
	// (shardActive); they step down when an earlier version or another
	// number of shards holds it, or once it may have expired (LeaseTTL), and
	// otherwise go on when a rewrite succeeds: a slow round is no election.
	if !c.fenceOK() {
		switch {
		case c.legacy.Load() || c.mismatch.Load():
			c.stepDownAll("the fence against earlier versions is not this version's", true)
		case c.fenceAge() >= c.opts.LeaseTTL:
			c.stepDownAll("the fence against earlier versions was not renewed in time", true)
		}
	}
	c.forwardLegacy()
	if ctx.Err() == nil {
		rbCtx, cancel := context.WithTimeout(ctx, c.opts.RenewEvery)
		defer cancel()
		c.rebalance(ctx, rbCtx, kv)
	}
}

// renewFence keeps the key of earlier versions' single dispenser taken, so
// that none of them is elected while shards are dispensed. Every replica of
// this version rewrites it each round (compare-and-swap; one write a round
// wins). fenceAt becomes the time a read was sent that was followed by a
// write of the fence: the fence then expires LeaseTTL after it at the
// earliest, and shards stop granting StopAfter after it, so an earlier
// version elected after the fence expired grants more than a second after the
// last shard grant. While an earlier version's dispenser holds the key, this
// replica asks it for grants and takes no shard.
func (c *Cluster) renewFence(ctx context.Context, kv jetstream.KeyValue) {
	sent := time.Now()
	e, err := kv.Get(ctx, legacyKey)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		if _, err := kv.Create(ctx, legacyKey, c.fenceValue()); err == nil {
			c.fenced(sent)
		}
		return
	}
	if err != nil {
		return
	}
	if !c.isFence(e) {
		return
	}
	_, err = kv.Update(ctx, legacyKey, c.fenceValue(), e.Revision())
	if err == nil {
		c.fenced(sent)
		return
	}
	if errors.Is(err, jetstream.ErrKeyRevisionMismatch) || errors.Is(err, jetstream.ErrKeyExists) {
		// Another replica rewrote it after the read: if it is still this
		// version's fence, it was written after sent.
		if e2, err := kv.Get(ctx, legacyKey); err == nil && e2.Revision() > e.Revision() && c.isFence(e2) {
			c.fenced(sent)
		}
	}
}

// isFence reports whether the entry is this version's fence with this
// replica's number of shards; otherwise it says so (and switches to an
// earlier version's dispenser when that is what holds the key).
func (c *Cluster) isFence(e jetstream.KeyValueEntry) bool {
	var info LeaseInfo
	_ = json.Unmarshal(e.Value(), &info)
	if info.Shards == 0 {
		if !c.legacy.Swap(true) {
			c.opts.Log.Warn().Str("dispenser", info.Replica).
				Msg("rate-limit: an earlier version's dispenser holds the lease; asking it for grants until it stops (see the upgrade notes)")
		}
		c.seen()
		return false
	}
	if c.legacy.Swap(false) {
		c.opts.Log.Info().Msg("rate-limit: the earlier version's dispenser is gone; grants come from the shards' dispensers")
	}
	if info.Shards != c.opts.Shards {
		if c.mismatch.Swap(true) {
			return false
		}
		c.opts.Log.Error().Int("cluster", info.Shards).Int("replica", c.opts.Shards).
			Msg("rate-limit: this replica's number of shards differs from the cluster's; it takes no shard and gets no grant until they match")
		return false
	}
	c.mismatch.Store(false)
	return true
}

func (c *Cluster) fenceValue() []byte {
	b, _ := json.Marshal(LeaseInfo{Replica: "sharded (" + strconv.Itoa(c.opts.Shards) + " shards)", Shards: c.opts.Shards})
	return b
}

func (c *Cluster) fenced(sent time.Time) {
	c.mu.Lock()
	if sent.After(c.fenceAt) {
		c.fenceAt = sent
	}
	c.lastSeen = time.Now()
	c.mu.Unlock()
}

func (c *Cluster) fenceOK() bool { return c.fenceAge() < c.opts.StopAfter }

// fenceAge is the time since the read that last saw the fence rewritten.
func (c *Cluster) fenceAge() time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Since(c.fenceAt)
}

// renewShards rewrites every held shard's lease, in parallel. A shard not
// renewed for StopAfter grants nothing (shardActive) but keeps its lease
// while it may: until LeaseTTL after its last renewal no other replica can
// have created it, so a renewal that succeeds by then lets it go on (a slow
// write under load costs a pause, not an election and LeaseTTL without a
// dispenser). It steps down when the lease was lost, or once LeaseTTL has
// passed.
func (c *Cluster) renewShards(ctx context.Context, kv jetstream.KeyValue) {
	hs := c.heldShards()
	var wg sync.WaitGroup
	for _, h := range hs {
		wg.Go(func() { c.renew(ctx, kv, h) })
	}
	wg.Wait()
	for _, h := range hs {
		c.mu.Lock()
		late := time.Since(h.lastRenew) >= c.opts.LeaseTTL
		c.mu.Unlock()
		if late {
			c.stepDown(h, "lease not renewed in time", false)
		}
	}
}

// renew rewrites the shard's lease (compare-and-swap on its revision).
func (c *Cluster) renew(ctx context.Context, kv jetstream.KeyValue, h *heldShard) {
	for attempt := 0; ; attempt++ {
		c.mu.Lock()
		rev := h.rev
		c.mu.Unlock()
		value := c.leaseValue(h.n, h.disp)
		sent := time.Now() // before the write: the lease runs from then at the earliest
		r, err := kv.Update(ctx, shardKey(h.n), value, rev)
		switch {
		case err == nil:
			c.renewals.Add(1)
			c.mu.Lock()
			h.rev, h.lastRenew = r, sent
			c.mu.Unlock()
			return
		case errors.Is(err, jetstream.ErrKeyRevisionMismatch) || errors.Is(err, jetstream.ErrKeyExists) ||
			errors.Is(err, jetstream.ErrKeyNotFound):
			// An earlier write whose answer came too late may have been
			// applied: while the lease still names this dispenser, no other
			// replica has written it since, and its revision is this one's.
			if attempt == 0 {
				if e, err := kv.Get(ctx, shardKey(h.n)); err == nil && c.ownLease(e, h) {
					c.mu.Lock()
					h.rev = e.Revision()
					c.mu.Unlock()
					continue
				}
			}
			c.stepDown(h, "lease lost", false) // it expired and may be another's
			return
		}
		// Otherwise NATS is slow or briefly away: the shard pauses StopAfter
		// after its last renewal, and steps down LeaseTTL after it.
		return
	}
}

// ownLease reports whether the lease entry was written by the shard's
// dispenser on this replica.
func (c *Cluster) ownLease(e jetstream.KeyValueEntry, h *heldShard) bool {
	var info LeaseInfo
	return json.Unmarshal(e.Value(), &info) == nil && info.DispenserID != "" && info.DispenserID == h.disp.id
}

// rebalance hands over a shard while this replica holds more than its share,
// ceil(Shards / live replicas), and takes free shards while it holds fewer.
// A replica starting takes none in its first round, so that the replicas
// starting with it are counted.
func (c *Cluster) rebalance(ctx, opCtx context.Context, kv jetstream.KeyValue) {
	if !c.fenceOK() || time.Since(c.started) < c.opts.RenewEvery || !c.view.isSynced() {
		return
	}
	shards := c.opts.Shards
	live := c.view.live(c.id, c.opts.LeaseTTL)
	quota := (shards + live - 1) / live
	c.mu.Lock()
	if live != c.liveSeen {
		c.liveSeen, c.liveSince = live, time.Now()
	}
	steady := time.Since(c.liveSince) >= handOverAfter
	held := len(c.held)
	hs := make([]*heldShard, 0, held)
	for _, h := range c.held {
		hs = append(hs, h)
	}
	c.mu.Unlock()
	if held > quota {
		// A shard handed over has no dispenser until its lease expires:
		// only once the count of replicas held still for handOverAfter (a
		// replica cut off and back, or one whose presence was late, moves
		// nothing), one a round, and the least busy first (an idle shard's
		// move costs no one a grant).
		if steady {
			c.stepDown(leastBusy(hs), "handed over: "+strconv.Itoa(live)+" replicas share the shards", true)
		}
		return
	}
	// The handed-over state of quiet leases, read before they expire.
	for n := range shards {
		rev, quiet := c.view.quiet(n, c.opts.StopAfter)
		c.mu.Lock()
		_, mine := c.held[n]
		known := c.handovers[n].rev == rev
		c.mu.Unlock()
		if !quiet || mine || known {
			continue
		}
		if e, err := kv.Get(opCtx, shardKey(n)); err == nil {
			var info LeaseInfo
			if json.Unmarshal(e.Value(), &info) == nil {
				c.mu.Lock()
				c.handovers[n] = handoverSeen{rev: e.Revision(), state: info.Handover}
				c.mu.Unlock()
			}
		}
	}
	if held >= quota {
		return
	}
	free := c.view.free(shards, c.opts.LeaseTTL)
	rand.Shuffle(len(free), func(i, j int) { free[i], free[j] = free[j], free[i] })
	for _, n := range free {
		if held >= quota || opCtx.Err() != nil {
			return
		}
		c.mu.Lock()
		_, mine := c.held[n]
		c.mu.Unlock()
		if !mine && c.take(ctx, opCtx, kv, n) {
			held++
		}
	}
}

// handOverAfter: how long the count of live replicas must hold still before
// a replica hands over the shards above its share.
const handOverAfter = 10 * time.Second

// leastBusy is the held shard whose dispenser has the fewest requests waiting
// and grants in the last ten seconds (the lowest-numbered among equals).
func leastBusy(hs []*heldShard) *heldShard {
	var best *heldShard
	bestLoad := 0
	for _, h := range hs {
		load := h.disp.load()
		if best == nil || load < bestLoad || (load == bestLoad && h.n < best.n) {
			best, bestLoad = h, load
		}
	}
	return best
}

// take tries to create the shard's lease and, when it did, dispenses its
// grants, starting from the state its last dispenser handed over.
func (c *Cluster) take(ctx, opCtx context.Context, kv jetstream.KeyValue, n int) bool {
	d := newDispenser(c.opts)
	c.mu.Lock()
	ho := c.handovers[n]
	c.mu.Unlock()
	if lastRev, ok := c.view.revision(n); ok && ho.rev == lastRev {
		d.adopt(ho.state)
	}
	sent := time.Now()
	rev, err := kv.Create(opCtx, shardKey(n), c.leaseValue(n, d))
	if err != nil {
		return false
	}
	c.elections.Add(1) // before the first grant can be given
	h := &heldShard{n: n, disp: d, rev: rev, lastRenew: sent}
	c.mu.Lock()
	c.held[n] = h
	delete(c.handovers, n)
	c.mu.Unlock()
	grantSub, err1 := c.nc.Subscribe(shardSubject(SubjectGrant, c.opts.Shards, n), d.onRequest)
	slowSub, err2 := c.nc.Subscribe(shardSubject(SubjectThrottled, c.opts.Shards, n), func(m *nats.Msg) { d.throttled(string(m.Data)) })
	c.mu.Lock()
	h.subs = []*nats.Subscription{grantSub, slowSub}
	c.mu.Unlock()
	if err1 != nil || err2 != nil {
		c.stepDown(h, "subscribe failed", true)
		return false
	}
	c.opts.Log.Info().Str("replica", c.opts.Name).Int("shard", n).Int("guards", len(ho.state)).
		Msg("rate-limit dispenser: elected for a shard")
	go d.run(ctx, c.shardActive(h))
	c.announce(n)
	return true
}

// shardActive: this replica may grant for the shard: its lease was renewed
// less than StopAfter ago, so was the fence, and its connection is up. A
// reply published while the connection is away waits in the client's
// reconnect buffer and reaches the requester only after the reconnect,
// together with every other one buffered meanwhile: a burst of grants, some
// perhaps after another dispenser took over. So a disconnected dispenser
// grants nothing (what it holds waits, or is told to ask again when it steps
// down).
func (c *Cluster) shardActive(h *heldShard) func() bool {
	return func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.held[h.n] == h && time.Since(h.lastRenew) < c.opts.StopAfter &&
			time.Since(c.fenceAt) < c.opts.StopAfter && c.nc.Status() == nats.CONNECTED
	}
}

// stepDown stops dispensing the shard. With final, its lease is written once
// more with the state handed over (the next dispenser takes it LeaseTTL
// later, when the lease expires).
func (c *Cluster) stepDown(h *heldShard, why string, final bool) {
	c.mu.Lock()
	if c.held[h.n] != h {
		c.mu.Unlock()
		return
	}
	delete(c.held, h.n)
	subs, rev := h.subs, h.rev
	c.mu.Unlock()
	for _, s := range subs {
		if s != nil {
			_ = s.Unsubscribe()
		}
	}
	h.disp.stop()
	c.dispensedBefore.Add(h.disp.granted.Load())
	if final {
		ctx, cancel := context.WithTimeout(context.Background(), c.opts.RenewEvery)
		_, _ = c.bucket().Update(ctx, shardKey(h.n), c.leaseValue(h.n, h.disp), rev)
		cancel()
	}
	ev := c.opts.Log.Warn() // the lease lost or not renewed: worth a look
	if final {
		ev = c.opts.Log.Info() // a normal stop or hand-over: another replica takes over
	}
	ev.Str("replica", c.opts.Name).Int("shard", h.n).Str("why", why).Msg("rate-limit dispenser: stepped down")
}

// heldShards are the shards this replica dispenses now.
func (c *Cluster) heldShards() []*heldShard {
	c.mu.Lock()
	defer c.mu.Unlock()
	hs := make([]*heldShard, 0, len(c.held))
	for _, h := range c.held {
		hs = append(hs, h)
	}
	return hs
}

func (c *Cluster) stepDownAll(why string, final bool) {
	hs := c.heldShards()
	var wg sync.WaitGroup
	for _, h := range hs {
		wg.Go(func() { c.stepDown(h, why, final) })
	}
	wg.Wait()
}

// forwardLegacy passes the requests and reports of earlier versions' replicas
// (on SubjectGrant and SubjectThrottled) on to the shards' dispensers while
// the fence keeps those versions from dispensing; one replica of this
// version forwards each (a queue group). The dispenser answers the requester
// directly.
func (c *Cluster) forwardLegacy() {
	ok := c.fenceOK()
	c.mu.Lock()
	on := c.forward != nil
	c.mu.Unlock()
	switch {
	case ok && !on:
		const queue = "xygroup-limiter-forward"
		shards := c.opts.Shards
		g, err1 := c.nc.QueueSubscribe(SubjectGrant, queue, func(m *nats.Msg) {
			var r grantRequest
			if json.Unmarshal(m.Data, &r) != nil || m.Reply == "" {
				return
			}
			_ = c.nc.PublishMsg(&nats.Msg{Subject: shardSubject(SubjectGrant, shards, ShardOf(r.Enterprise, shards)), Reply: m.Reply, Data: m.Data})
		})
		t, err2 := c.nc.QueueSubscribe(SubjectThrottled, queue, func(m *nats.Msg) {
			_ = c.nc.Publish(shardSubject(SubjectThrottled, shards, ShardOf(string(m.Data), shards)), m.Data)
		})
		c.mu.Lock()
		c.forward = []*nats.Subscription{g, t}
		c.mu.Unlock()
		if err1 != nil || err2 != nil {
			c.unforward()
		}
	case !ok && on:
		c.unforward()
	}
}

func (c *Cluster) unforward() {
	c.mu.Lock()
	subs := c.forward
	c.forward = nil
	c.mu.Unlock()
	for _, s := range subs {
		if s != nil {
			_ = s.Unsubscribe()
		}
	}
}

// grantSubject and throttledSubject: where this replica asks for the
// enterprise's grants and reports its rate-limit answers.
func (c *Cluster) grantSubject(enterpriseID string) string {
	if c.legacy.Load() {
		return SubjectGrant
	}
	return shardSubject(SubjectGrant, c.opts.Shards, ShardOf(enterpriseID, c.opts.Shards))
}

func (c *Cluster) throttledSubject(enterpriseID string) string {
	if c.legacy.Load() {
		return SubjectThrottled
	}
	return shardSubject(SubjectThrottled, c.opts.Shards, ShardOf(enterpriseID, c.opts.Shards))
}

func (c *Cluster) leaseValue(n int, d *dispenser) []byte {
	info := LeaseInfo{Replica: c.opts.Name, Shard: n, Shards: c.opts.Shards}
	if d != nil {
		info.DispenserID = d.id
		info.Since = d.since
		info.Enterprises = d.use()
		info.Handover = d.handover()
		info.WindowsEnd = time.Unix(0, d.opts.Now().UnixNano()/int64(windowLength)*int64(windowLength)).UTC()
	}
	b, _ := json.Marshal(info)
	return b
}

// leaseView follows the bucket's keys (their revisions, not their values):
// which replicas are present and when each shard's lease was last written,
// as seen on this replica's clock.
type leaseView struct {
	mu     sync.Mutex
	w      jetstream.KeyWatcher
	synced bool
	keys   map[string]keySeen
	// last: when the watcher last delivered anything; this replica writes
	// its presence every round, so a silent watcher is a broken one.
	last time.Time
}

type keySeen struct {
	rev  uint64
	at   time.Time
	gone bool // deleted or purged
}

func (v *leaseView) ensure(ctx context.Context, kv jetstream.KeyValue, ttl time.Duration) {
	v.mu.Lock()
	broken := v.w != nil && time.Since(v.last) > 2*ttl
	if v.w != nil && !broken {
		v.mu.Unlock()
		return
	}
	old := v.w
	v.w, v.synced, v.keys, v.last = nil, false, map[string]keySeen{}, time.Now()
	v.mu.Unlock()
	if old != nil {
		_ = old.Stop()
	}
	w, err := kv.WatchAll(ctx, jetstream.MetaOnly())
	if err != nil {
		return // the next round tries again
	}
	v.mu.Lock()
	v.w = w
	v.mu.Unlock()
	go func() {
		for e := range w.Updates() {
			v.mu.Lock()
			if v.w != w {
				v.mu.Unlock()
				return
			}
			v.last = time.Now()
			if e == nil {
				v.synced = true
			} else {
				v.keys[e.Key()] = keySeen{rev: e.Revision(), at: v.last, gone: e.Operation() != jetstream.KeyValuePut}
			}
			v.mu.Unlock()
		}
	}()
}

// restart makes the next round watch again (the bucket was created again).
func (v *leaseView) restart() {
	v.mu.Lock()
	v.last = time.Time{}
	v.mu.Unlock()
}

func (v *leaseView) stop() {
	v.mu.Lock()
	w := v.w
	v.w = nil
	v.mu.Unlock()
	if w != nil {
		_ = w.Stop()
	}
}

func (v *leaseView) isSynced() bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.w != nil && v.synced
}

// live counts the replicas present (written within ttl), this one included.
func (v *leaseView) live(self string, ttl time.Duration) int {
	v.mu.Lock()
	defer v.mu.Unlock()
	n := 1
	for k, s := range v.keys {
		if len(k) > len(presenceKeyPrefix) && k[:len(presenceKeyPrefix)] == presenceKeyPrefix &&
			k != presenceKeyPrefix+self && !s.gone && time.Since(s.at) < ttl {
			n++
		}
	}
	return n
}

// free lists the shards whose lease is missing or unwritten for ttl.
func (v *leaseView) free(shards int, ttl time.Duration) []int {
	v.mu.Lock()
	defer v.mu.Unlock()
	var out []int
	for n := range shards {
		s, ok := v.keys[shardKey(n)]
		if !ok || s.gone || time.Since(s.at) >= ttl {
			out = append(out, n)
		}
	}
	return out
}

// quiet reports a shard lease unwritten for d (its dispenser stopped
// granting), and its revision.
func (v *leaseView) quiet(n int, d time.Duration) (uint64, bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	s, ok := v.keys[shardKey(n)]
	return s.rev, ok && !s.gone && time.Since(s.at) >= d
}

// revision is the shard lease's last revision seen.
func (v *leaseView) revision(n int) (uint64, bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	s, ok := v.keys[shardKey(n)]
	return s.rev, ok && !s.gone
}
