package ratelimit

import (
	"container/heap"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
	"github.com/rs/zerolog"

	"github.com/xygroup/xygroup/worker/jsconfig"
)

// Subjects and bucket of the cluster limiter.
const (
	SubjectGrant     = "xygroup.limiter.grant"
	SubjectThrottled = "xygroup.limiter.throttled"
	Bucket           = "xygroup-limiter"
	leaseKey         = "dispenser"
)

// Options tune a Cluster limiter; zero values take the defaults in brackets.
type Options struct {
	// Rate is each enterprise's calls per second [20].
	Rate func(enterpriseID string) float64
	// Guard widens the window grants are spaced over [25 ms]: grants are
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
	// Replicas of the bucket [1].
	Replicas int
	// Name of this replica, in the lease and logs.
	Name string
	// Now is this replica's clock [time.Now]; tests inject offsets.
	Now func() time.Time
	Log zerolog.Logger
}

func (o *Options) defaults() {
	if o.Rate == nil {
		o.Rate = func(string) float64 { return 20 }
	}
	if o.Guard <= 0 {
		o.Guard = 25 * time.Millisecond
	}
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
	if o.Replicas <= 0 {
		o.Replicas = 1
	}
	if o.Now == nil {
		o.Now = time.Now
	}
}

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
	// nextSend: per enterprise, the earliest time this replica lets its next
	// granted call go (see spaceLocally).
	nextSend map[string]time.Time
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

type grantRequest struct {
	Enterprise string   `json:"e"`
	Priority   Priority `json:"p"`
	Rate       float64  `json:"r"`
	// Lead: microseconds this replica usually takes from a grant's dispatch
	// to its request's departure (see Cluster.lead). The dispenser spaces the
	// departures, not the grants: a replica farther from NATS gets its grants
	// that much earlier.
	Lead int64 `json:"l,omitempty"`
	// Place asks again at the place a reply gave (see grantReply).
	Place
}

// Place is a request's place in a dispenser's queue: the dispenser that
// gave it, and its sequence there. A request asked again with the place of
// its earlier answer (told to ask again, or a grant that came too late to be
// used) takes that place again, before the requests that came after it.
type Place struct {
	Dispenser string `json:"d,omitempty"`
	Seq       uint64 `json:"s,omitempty"`
}

type grantReply struct {
	OK bool `json:"ok"`
	Place
	// Queued: microseconds the request waited in the dispenser's queue. The
	// rest of the time between the request and its answer is spent on the
	// way (see transit).
	Queued int64 `json:"q,omitempty"`
}

// Wait implements Limiter: it asks the dispenser and waits for its grant. With no
// dispenser it keeps asking until ctx ends (fail closed).
//
// Core NATS delivers a reply at most once: a reply can be lost (the requester's
// or the dispenser's connection breaks, a client drops it as a slow consumer).
// A lost grant is never a lost call: the request times out (the dispenser
// answers every request within MaxQueueWait, "ask again" at worst, so the
// timeout is MaxQueueWait + 2 s) and Wait asks again. The dispenser counts
// every grant it sends as used, whether or not it arrives: it cannot know, and
// a grant counted as unused that did arrive would let one call too many into
// a second. A lost reply costs one grant interval of the budget, never the limit.
func (c *Cluster) Wait(ctx context.Context, enterpriseID string, p Priority, opts ...WaitOption) error {
	o := waitOptionsOf(opts)
	defer o.queued() // not sent at all (ctx ended first): the next may ask
	req := grantRequest{Enterprise: enterpriseID, Priority: p, Rate: c.opts.Rate(enterpriseID)}
	for {
		req.Lead = c.transit.lead().Microseconds()
		body, _ := json.Marshal(req)
		rctx, cancel := context.WithTimeout(ctx, c.opts.MaxQueueWait+2*time.Second)
		c.requests.Add(1)
		msg, sentAt, err := c.replies.request(rctx, c.nc, SubjectGrant, body, o.queued)
		cancel()
		if err == nil {
			var r grantReply
			ok := json.Unmarshal(msg.Data, &r) == nil
			req.Place = r.Place // asked again, it keeps its place
			if ok && r.OK {
				c.grantsSeen.Add(1)
				c.seen()
				if c.transit.late(time.Since(sentAt) - time.Duration(r.Queued)*time.Microsecond) {
					// Held on its way (a pause of this process or of NATS):
					// later grants of the enterprise may be arriving with it.
					// It is not used; the dispenser counted it already.
					c.staleGrants.Add(1)
					continue
				}
				return c.spaceLocally(ctx, enterpriseID)
			}
			continue // "ask again": waited too long in the queue, or the dispenser stepped down
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		// No dispenser (election, NATS away): no call without a grant.
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// localSpacing is the least time between two of this replica's calls for one
// enterprise: a little over a second divided by the rate, so that no second
// holds more than the rate of them, and a little under the dispenser's
// spacing, so that a grant delayed on its way here is made up within a few
// grants.
func (c *Cluster) localSpacing(enterpriseID string) time.Duration {
	return time.Duration(1.01 * float64(time.Second) / c.opts.Rate(enterpriseID))
}

// spaceLocally holds a grant until the replica's previous call for the
// enterprise is localSpacing behind. The dispenser spaces grants, but a busy
// replica (a garbage collection, a starved core) can receive one late and the
// next on time; sent as they come, two calls would leave too close together.
func (c *Cluster) spaceLocally(ctx context.Context, enterpriseID string) error {
	c.mu.Lock()
	if c.nextSend == nil {
		c.nextSend = map[string]time.Time{}
	}
	at := time.Now()
	if next := c.nextSend[enterpriseID]; next.After(at) {
		at = next
	}
	c.nextSend[enterpriseID] = at.Add(c.localSpacing(enterpriseID))
	c.mu.Unlock()
	wait := time.Until(at)
	if wait <= 0 {
		return nil
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// Throttled implements Limiter: every replica's grants for the enterprise slow down.
func (c *Cluster) Throttled(enterpriseID string) {
	_ = c.nc.Publish(SubjectThrottled, []byte(enterpriseID))
}

// elect keeps trying to become the dispenser, and renews the lease while it is.
func (c *Cluster) elect(ctx context.Context) {
	tick := time.NewTicker(c.opts.RenewEvery)
	defer tick.Stop()
	var rev uint64
	for {
		value := c.leaseValue()
		opCtx, cancel := context.WithTimeout(ctx, c.opts.RenewEvery)
		kv := c.bucket()
		if rev == 0 {
			r, err := kv.Create(opCtx, leaseKey, value)
			switch {
			case err == nil:
				rev = r
				c.seen()
				c.becomeDispenser(ctx)
			case errors.Is(err, jetstream.ErrKeyExists):
				c.seen() // another replica holds a live lease
			default:
				c.reopen(ctx)
			}
		} else {
			r, err := kv.Update(opCtx, leaseKey, value, rev)
			switch {
			case err == nil:
				rev = r
				c.seen()
				c.renewed()
			case errors.Is(err, jetstream.ErrKeyRevisionMismatch) || errors.Is(err, jetstream.ErrKeyExists) ||
				errors.Is(err, jetstream.ErrKeyNotFound):
				rev = 0 // the lease expired and may be someone else's
				c.stepDown("lease lost")
			default:
				// NATS briefly away: the dispenser stops by itself StopAfter
				// after its last renewal. Or the bucket is gone.
				c.reopen(ctx)
			}
		}
		cancel()
		select {
		case <-ctx.Done():
			c.stepDown("stopping")
			return
		case <-tick.C:
		}
		if rev != 0 && !c.active() {
			rev = 0
			c.stepDown("lease not renewed in time")
		}
	}
}

// LeaseInfo is what the dispenser writes in its lease: who it is and, per
// enterprise, its rate and the grants of the last ten seconds.
type LeaseInfo struct {
	Replica     string                    `json:"replica"`
	Since       time.Time                 `json:"since"`
	Enterprises map[string]EnterpriseInfo `json:"enterprises,omitempty"`
	// WindowsEnd is when the enterprises' last complete ten-second window ended.
	WindowsEnd time.Time `json:"windowsEnd,omitzero"`
}

// EnterpriseInfo is one enterprise's budget and use.
type EnterpriseInfo struct {
	Rate       float64 `json:"rate"`
	Granted10s int     `json:"granted10s"`
	Waiting    int     `json:"waiting"`
	// GuardMs is the guard the enterprise's grants are spaced with now (it
	// learns from rate-limit answers), and Throttled10m the rate-limit
	// answers reported in the last ten minutes.
	GuardMs      float64 `json:"guardMs"`
	Throttled10m int     `json:"throttled10m,omitempty"`
	// Granted5m and Throttled5m are the grants and the rate-limit answers of
	// the last HistoryWindows complete ten-second windows, oldest first, as
	// counted by this dispenser (a new dispenser starts them again); the last
	// window ends at LeaseInfo.WindowsEnd.
	Granted5m   []int `json:"granted5m,omitempty"`
	Throttled5m []int `json:"throttled5m,omitempty"`
}

// Window is one ten-second window of an enterprise's use.
type Window struct {
	Start     time.Time
	Granted   int
	Throttled int
}

// Windows are the enterprise's windows, oldest first; end is
// LeaseInfo.WindowsEnd.
func (e EnterpriseInfo) Windows(end time.Time) []Window {
	out := make([]Window, len(e.Granted5m))
	for i, g := range e.Granted5m {
		out[i] = Window{Start: end.Add(-time.Duration(len(e.Granted5m)-i) * windowLength), Granted: g}
		if i < len(e.Throttled5m) {
			out[i].Throttled = e.Throttled5m[i]
		}
	}
	return out
}

// HistoryWindows: how many ten-second windows the lease keeps (five minutes).
const HistoryWindows = 30

const windowLength = 10 * time.Second

// history counts an enterprise's grants and rate-limit answers per
// ten-second window, in a ring of HistoryWindows + 1 (the current one).
type history struct {
	counts [HistoryWindows + 1][2]int // granted, throttled
	cur    int64                      // the current window's number (Unix time / 10 s)
}

func (h *history) advance(now time.Time) {
	n := now.UnixNano() / int64(windowLength)
	for h.cur < n {
		h.cur++
		h.counts[h.cur%int64(len(h.counts))] = [2]int{}
		if n-h.cur > int64(len(h.counts)) {
			h.cur = n - int64(len(h.counts)) // a long idle time: skip ahead
		}
	}
}

func (h *history) add(now time.Time, kind int) {
	h.advance(now)
	h.counts[h.cur%int64(len(h.counts))][kind]++
}

// windows returns the complete windows' counts, oldest first (throttled nil
// when there were none), and when the last one ended.
func (h *history) windows(now time.Time) (granted, throttled []int, end time.Time) {
	h.advance(now)
	granted = make([]int, 0, HistoryWindows)
	any429 := false
	for n := h.cur - HistoryWindows; n < h.cur; n++ {
		c := h.counts[n%int64(len(h.counts))]
		granted = append(granted, c[0])
		any429 = any429 || c[1] > 0
	}
	if any429 {
		throttled = make([]int, 0, HistoryWindows)
		for n := h.cur - HistoryWindows; n < h.cur; n++ {
			throttled = append(throttled, h.counts[n%int64(len(h.counts))][1])
		}
	}
	return granted, throttled, time.Unix(0, h.cur*int64(windowLength)).UTC()
}

func (c *Cluster) leaseValue() []byte {
	c.mu.Lock()
	d := c.disp
	c.mu.Unlock()
	info := LeaseInfo{Replica: c.opts.Name}
	if d != nil {
		info.Since = d.since
		info.Enterprises = d.use()
		info.WindowsEnd = time.Unix(0, d.opts.Now().UnixNano()/int64(windowLength)*int64(windowLength)).UTC()
	}
	b, _ := json.Marshal(info)
	return b
}

// Guards returns each enterprise's guard now, while this replica dispenses
// (nil otherwise): the enterprises it has seen, and the known ones it has
// not, at the floor.
func (c *Cluster) Guards(known ...string) map[string]time.Duration {
	c.mu.Lock()
	d := c.disp
	c.mu.Unlock()
	if d == nil {
		return nil
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	now := d.opts.Now()
	out := make(map[string]time.Duration, len(d.ents)+len(known))
	for _, id := range known {
		out[id] = d.opts.Guard
	}
	for id, q := range d.ents {
		out[id] = d.guard(q, now)
	}
	return out
}

// Dispenser reads the current dispenser's lease: who dispenses, and each
// enterprise's use of its budget. ok is false when there is none.
func Dispenser(ctx context.Context, js jetstream.JetStream) (LeaseInfo, bool, error) {
	kv, err := js.KeyValue(ctx, Bucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return LeaseInfo{}, false, nil
	}
	if err != nil {
		return LeaseInfo{}, false, err
	}
	e, err := kv.Get(ctx, leaseKey)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return LeaseInfo{}, false, nil
	}
	if err != nil {
		return LeaseInfo{}, false, err
	}
	var info LeaseInfo
	if json.Unmarshal(e.Value(), &info) != nil {
		info.Replica = string(e.Value())
	}
	return info, true, nil
}

func (c *Cluster) renewed() {
	c.renewals.Add(1)
	c.mu.Lock()
	c.lastRenew = time.Now()
	c.mu.Unlock()
}

// active: this replica may grant: its lease was renewed less than StopAfter
// ago, and its connection is up. A reply published while the connection is
// away waits in the client's reconnect buffer and reaches the requester only
// after the reconnect, together with every other one buffered meanwhile: a
// burst of grants, some perhaps after another dispenser took over. So a
// disconnected dispenser grants nothing (what it holds waits, or is told to ask
// again when it steps down).
func (c *Cluster) active() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.disp != nil && time.Since(c.lastRenew) < c.opts.StopAfter && c.nc.Status() == nats.CONNECTED
}

func (c *Cluster) becomeDispenser(ctx context.Context) {
	c.elections.Add(1) // before the first grant can be given
	d := newDispenser(c.opts)
	c.mu.Lock()
	c.lastRenew = time.Now()
	c.disp = d
	c.mu.Unlock()
	grantSub, err1 := c.nc.Subscribe(SubjectGrant, d.onRequest)
	slowSub, err2 := c.nc.Subscribe(SubjectThrottled, func(m *nats.Msg) { d.throttled(string(m.Data)) })
	if err1 != nil || err2 != nil {
		c.stepDown("subscribe failed")
		return
	}
	c.mu.Lock()
	c.subs = []*nats.Subscription{grantSub, slowSub}
	c.mu.Unlock()
	c.opts.Log.Info().Str("replica", c.opts.Name).Msg("rate-limit dispenser: elected")
	go d.run(ctx, c.active)
}

func (c *Cluster) stepDown(why string) {
	c.mu.Lock()
	d, subs := c.disp, c.subs
	c.disp, c.subs = nil, nil
	c.mu.Unlock()
	if d == nil {
		return
	}
	for _, s := range subs {
		_ = s.Unsubscribe()
	}
	d.stop()
	ev := c.opts.Log.Warn() // the lease lost or not renewed: worth a look
	if why == "stopping" {
		ev = c.opts.Log.Info() // a normal stop: another replica takes over
	}
	ev.Str("replica", c.opts.Name).Str("why", why).Msg("rate-limit dispenser: stepped down")
}

// dispenser hands out grants, per enterprise, spaced and by priority.
type dispenser struct {
	opts Options
	id   string // names this dispenser in the places it gives (Place)
	mu   sync.Mutex
	ents map[string]*enterpriseQueue
	// due holds the enterprises with waiting requests, earliest dueAt first:
	// a wake-up costs O(log n) per enterprise served, not a look at every one.
	due dueHeap
	// swept is when ents was last cleared of idle enterprises.
	swept   time.Time
	wake    chan struct{}
	done    chan struct{}
	once    sync.Once
	seq     uint64
	granted atomic.Int64
	since   time.Time
}

// use reports each enterprise's rate and recent grants.
func (d *dispenser) use() map[string]EnterpriseInfo {
	d.mu.Lock()
	defer d.mu.Unlock()
	now := d.opts.Now()
	out := make(map[string]EnterpriseInfo, len(d.ents))
	for id, q := range d.ents {
		n := 0
		for _, t := range q.recent {
			if now.Sub(t) <= 10*time.Second {
				n++
			}
		}
		throttled := 0
		for _, t := range q.throttled {
			if now.Sub(t) <= 10*time.Minute {
				throttled++
			}
		}
		out[id] = EnterpriseInfo{Rate: q.rate, Granted10s: n, Waiting: q.waiting.Len(),
			GuardMs: float64(d.guard(q, now)) / float64(time.Millisecond), Throttled10m: throttled}
	}
	// The history of the busiest enterprises only: the lease is one KV value,
	// rewritten at every renewal, and must stay far below NATS's largest
	// message whatever the number of enterprises.
	type busy struct {
		id    string
		total int
	}
	var busiest []busy
	for id, q := range d.ents {
		granted, _, _ := q.history.windows(now)
		total := 0
		for _, g := range granted {
			total += g
		}
		if total > 0 {
			busiest = append(busiest, busy{id, total})
		}
	}
	sort.Slice(busiest, func(i, j int) bool { return busiest[i].total > busiest[j].total })
	for _, b := range busiest[:min(len(busiest), HistoryEnterprises)] {
		e := out[b.id]
		e.Granted5m, e.Throttled5m, _ = d.ents[b.id].history.windows(now)
		out[b.id] = e
	}
	return out
}

// HistoryEnterprises: how many enterprises, the busiest, have their history
// in the lease (about 100 bytes each).
const HistoryEnterprises = 50

type enterpriseQueue struct {
	waiting requestHeap
	nextAt  time.Time
	rate    float64
	// dueAt is when the enterprise next needs the dispenser: its next grant,
	// or its head request's MaxQueueWait running out, whichever comes first.
	// index is its place in dispenser.due (-1: nothing waits).
	dueAt time.Time
	index int
	// extra is the learned guard above the floor; changed is when it last
	// changed (widened or narrowed).
	extra     time.Duration
	changed   time.Time
	throttled []time.Time // rate-limit answers of the last ten minutes
	recent    []time.Time // grant times of the last ten seconds
	probes    []time.Time // probe grant times of the last second
	history   history     // grants and 429s per ten seconds, for the status page
}

// next is the request to grant now: the head of the queue (live first, then
// retries, probes, replays), except for probes of waiting meetings, which take
// their share of the grants whatever waits, and never more while anything
// else waits.
func (d *dispenser) next(q *enterpriseQueue, rate float64, now time.Time) int {
	recent := 0
	for _, t := range q.probes {
		if now.Sub(t) < time.Second {
			recent++
		}
	}
	underShare := float64(recent) < d.opts.ProbeShare*rate
	probe, other := -1, -1
	for i, p := range q.waiting {
		if p.priority == Probe {
			if probe < 0 || p.seq < q.waiting[probe].seq {
				probe = i
			}
		} else if other < 0 || q.waiting.Less(i, other) {
			other = i
		}
	}
	switch {
	case probe >= 0 && (underShare || other < 0):
		return probe
	case other >= 0:
		return other
	}
	return 0
}

// dueHeap orders enterprises with waiting requests by dueAt.
type dueHeap []*enterpriseQueue

func (h dueHeap) Len() int           { return len(h) }
func (h dueHeap) Less(i, j int) bool { return h[i].dueAt.Before(h[j].dueAt) }
func (h dueHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index, h[j].index = i, j
}
func (h *dueHeap) Push(x any) {
	q := x.(*enterpriseQueue)
	q.index = len(*h)
	*h = append(*h, q)
}
func (h *dueHeap) Pop() any {
	old := *h
	q := old[len(old)-1]
	old[len(old)-1] = nil
	q.index = -1
	*h = old[:len(old)-1]
	return q
}

// schedule puts q in the due heap at its dueAt while requests wait, and takes
// it out when none do.
func (d *dispenser) schedule(q *enterpriseQueue) {
	if q.waiting.Len() == 0 {
		if q.index >= 0 {
			heap.Remove(&d.due, q.index)
		}
		return
	}
	// The next request's departure is due at nextAt: its grant, lead before.
	now := d.opts.Now()
	q.dueAt = q.nextAt.Add(-q.waiting[d.next(q, q.rateOr(d.opts.Rate("")), now)].lead)
	// Strictly after MaxQueueWait: that is when grantDue answers "ask again".
	if expires := q.waiting[0].arrived.Add(d.opts.MaxQueueWait + 1); expires.Before(q.dueAt) {
		q.dueAt = expires
	}
	if q.index < 0 {
		heap.Push(&d.due, q)
	} else {
		heap.Fix(&d.due, q.index)
	}
}

type pending struct {
	msg      *nats.Msg
	priority Priority
	seq      uint64
	arrived  time.Time
	lead     time.Duration // from dispatch to departure at the requester (grantRequest.Lead)
}

// maxLead bounds the lead a requester may claim.
const maxLead = 100 * time.Millisecond

type requestHeap []*pending

func (h requestHeap) Len() int { return len(h) }
func (h requestHeap) Less(i, j int) bool {
	if ri, rj := h[i].priority.rank(), h[j].priority.rank(); ri != rj {
		return ri < rj
	}
	return h[i].seq < h[j].seq
}
func (h requestHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *requestHeap) Push(x any)   { *h = append(*h, x.(*pending)) }
func (h *requestHeap) Pop() any {
	old := *h
	p := old[len(old)-1]
	*h = old[:len(old)-1]
	return p
}

func newDispenser(opts Options) *dispenser {
	return &dispenser{opts: opts, id: nuid.Next(), ents: map[string]*enterpriseQueue{}, wake: make(chan struct{}, 1), done: make(chan struct{}),
		since: time.Now()}
}

// maxCatchUp bounds how much a late grant's lateness is made up on the next one.
// Any second then holds at most floor((1 s + maxCatchUp) / spacing) + 1 = rate
// grants, and the delay between a grant and its arrival at the API may vary by
// Guard - maxCatchUp (23 ms) without a window at the API exceeding the rate.
const maxCatchUp = 2 * time.Millisecond

var (
	replyAgain = []byte(`{"ok":false}`)
)

func (d *dispenser) onRequest(m *nats.Msg) {
	var r grantRequest
	if json.Unmarshal(m.Data, &r) != nil || m.Reply == "" {
		return
	}
	d.mu.Lock()
	q := d.ents[r.Enterprise]
	if q == nil {
		q = &enterpriseQueue{index: -1}
		d.ents[r.Enterprise] = q
	}
	if r.Rate > 0 {
		q.rate = r.Rate
	}
	seq := r.Seq
	if r.Dispenser != d.id || seq == 0 || seq > d.seq {
		d.seq++
		seq = d.seq
	}
	lead := min(max(time.Duration(r.Lead)*time.Microsecond, 0), maxLead)
	heap.Push(&q.waiting, &pending{msg: m, priority: r.Priority, seq: seq, arrived: d.opts.Now(), lead: lead})
	d.schedule(q)
	// The run loop sleeps until the earliest dueAt: it needs waking only
	// when this enterprise is now the earliest.
	first := q.index == 0
	d.mu.Unlock()
	if !first {
		return
	}
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

// throttled widens the enterprise's guard after a rate-limit answer: the
// delay between a grant and its arrival at the API varies more than the guard
// allowed for. The answers of one crowded second come together and count once.
func (d *dispenser) throttled(enterpriseID string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	q := d.ents[enterpriseID]
	if q == nil {
		q = &enterpriseQueue{index: -1}
		d.ents[enterpriseID] = q
	}
	now := d.opts.Now()
	q.throttled = append(q.throttled, now)
	q.history.add(now, 1)
	if len(q.throttled) > 64 {
		q.throttled = q.throttled[len(q.throttled)-64:]
	}
	d.guard(q, now) // narrow first for the quiet time before this answer
	if !q.changed.IsZero() && now.Sub(q.changed) < d.opts.GuardCooldown && q.extra > 0 {
		return
	}
	q.extra = min(q.extra+d.opts.GuardStep, max(d.opts.GuardMax-d.opts.Guard, 0))
	q.changed = now
	d.opts.Log.Info().Str("enterpriseId", enterpriseID).Dur("guard", d.opts.Guard+q.extra).
		Msg("rate-limit answer: grants spaced wider")
}

// guard is the enterprise's guard now, narrowed by a fifth of a step for each
// quiet period since it last changed.
func (d *dispenser) guard(q *enterpriseQueue, now time.Time) time.Duration {
	if q.extra > 0 && now.Sub(q.changed) >= d.opts.GuardQuiet {
		steps := int(now.Sub(q.changed) / d.opts.GuardQuiet)
		q.extra = max(0, q.extra-time.Duration(steps)*d.opts.GuardStep/5)
		q.changed = q.changed.Add(time.Duration(steps) * d.opts.GuardQuiet)
	}
	return d.opts.Guard + q.extra
}

func (d *dispenser) spacing(q *enterpriseQueue, now time.Time) time.Duration {
	return time.Duration(float64(time.Second+d.guard(q, now)) / q.rateOr(d.opts.Rate("")))
}

// rateOr is the enterprise's rate as its requests give it, or def.
func (q *enterpriseQueue) rateOr(def float64) float64 {
	if q.rate > 0 {
		return q.rate
	}
	return def
}

// run grants while active() holds, until stopped.
func (d *dispenser) run(ctx context.Context, active func() bool) {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		next := d.grantDue(active)
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		timer.Reset(next)
		select {
		case <-ctx.Done():
			return
		case <-d.done:
			return
		case <-d.wake:
		case <-timer.C:
		}
	}
}

// grantDue answers every request whose grant is due and returns how long until
// the next one is. Only the enterprises whose dueAt has come are looked at.
func (d *dispenser) grantDue(active func() bool) time.Duration {
	d.mu.Lock()
	defer d.mu.Unlock()
	now := d.opts.Now()
	for len(d.due) > 0 && !now.Before(d.due[0].dueAt) {
		q := d.due[0]
		ok := d.serve(q, active)
		d.schedule(q)
		if !ok {
			return 50 * time.Millisecond
		}
	}
	// Enterprises idle for a minute are forgotten; a look at every one,
	// but once in ten seconds.
	if now.Sub(d.swept) >= 10*time.Second {
		d.swept = now
		for id, q := range d.ents {
			if q.waiting.Len() == 0 && now.After(q.nextAt.Add(time.Minute)) {
				delete(d.ents, id)
			}
		}
	}
	if len(d.due) == 0 {
		return time.Hour
	}
	return d.due[0].dueAt.Sub(now)
}

// serve answers the enterprise's requests that are due: the head's grant once
// nextAt has come, and "ask again" to a head that waited longer than
// MaxQueueWait. It returns false when the dispenser may not grant.
func (d *dispenser) serve(q *enterpriseQueue, active func() bool) bool {
	for q.waiting.Len() > 0 {
		now := d.opts.Now()
		head := q.waiting[0]
		if now.Sub(head.arrived) > d.opts.MaxQueueWait {
			heap.Pop(&q.waiting)
			_ = head.msg.Respond(d.reply(false, head, 0)) // the requester asks again, at its place
			continue
		}
		rate := q.rateOr(d.opts.Rate(""))
		i := d.next(q, rate, now)
		if now.Before(q.nextAt.Add(-q.waiting[i].lead)) {
			return true
		}
		if !active() {
			return false
		}
		head = heap.Remove(&q.waiting, i).(*pending)
		if err := head.msg.Respond(d.reply(true, head, now.Sub(head.arrived))); err != nil {
			continue // not sent at all: its grant is not spent
		}
		if head.priority == Probe {
			cut := 0
			for cut < len(q.probes) && now.Sub(q.probes[cut]) >= time.Second {
				cut++
			}
			q.probes = append(q.probes[:0], q.probes[cut:]...)
			q.probes = append(q.probes, now)
		}
		// Sent: counted as used even if the reply is lost on its way (see Wait).
		d.granted.Add(1)
		q.history.add(now, 0)
		q.recent = append(q.recent, now)
		if len(q.recent) > 64 && now.Sub(q.recent[0]) > 10*time.Second {
			cut := 0
			for cut < len(q.recent) && now.Sub(q.recent[cut]) > 10*time.Second {
				cut++
			}
			q.recent = append(q.recent[:0], q.recent[cut:]...)
		}
		// nextAt is the next departure's time. Schedule from the ideal time,
		// so that timer lateness does not eat the budget, but catch up by at
		// most maxCatchUp: departures are never closer than spacing -
		// maxCatchUp, and after a pause there is no burst.
		s := d.spacing(q, now)
		q.nextAt = q.nextAt.Add(s)
		if earliest := now.Add(head.lead + s - maxCatchUp); q.nextAt.Before(earliest) {
			q.nextAt = earliest
		}
	}
	return true
}

// stop ends the dispenser; waiting requesters are told to ask again.
func (d *dispenser) stop() {
	d.once.Do(func() {
		close(d.done)
		d.mu.Lock()
		defer d.mu.Unlock()
		for _, q := range d.ents {
			for _, p := range q.waiting {
				_ = p.msg.Respond(replyAgain)
			}
			q.waiting = nil
		}
		for _, q := range d.due {
			q.index = -1
		}
		d.due = nil
	})
}
