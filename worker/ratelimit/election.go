package ratelimit

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

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
