package ratelimit

import (
	"context"
	"encoding/json"
	"time"
)

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
		msg, sentAt, err := c.replies.request(rctx, c.nc, c.grantSubject(enterpriseID), body, o.queued)
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

// Throttled implements Limiter: every replica's grants for the enterprise slow
// down (its shard's dispenser widens its guard).
func (c *Cluster) Throttled(enterpriseID string) {
	_ = c.nc.Publish(c.throttledSubject(enterpriseID), []byte(enterpriseID))
}
