package ratelimit

import (
	"context"
	"errors"
	"math/rand/v2"
	"time"
)

type grantRequest struct {
	Enterprise string   `json:"e"`
	Priority   Priority `json:"p"`
	Rate       float64  `json:"r"`
	// Lead: microseconds this replica usually takes from a grant's decision
	// to its request being ready to leave (see transitTimes). The dispenser
	// spaces the departures, not the grants: a replica farther from NATS gets
	// its grants that much earlier, and holds them until then.
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
	// Budget: microseconds the request may leave after the departure the
	// dispenser spaced (see Departure). Absent from an earlier version's
	// grants only: a budget given, even 0, is the one to keep.
	Budget *int64 `json:"b,omitempty"`
}

// defaultBudget is the departure budget when a reply names none (a
// dispenser of an earlier version): what the default guard gives.
const defaultBudget = (25*time.Millisecond - maxCatchUp) / 2

// Wait implements Limiter: it asks the dispenser and waits for its grant. With no
// dispenser it keeps asking until ctx ends (fail closed).
//
// A grant is used only within its departure window (see Departure): a grant
// whose window is empty on arrival (held on its way longer than the budget
// allows) is not used, and Wait asks again at its place. With TakeDeparture
// the caller gets the window and leaves within it; otherwise Wait itself
// waits for the window's start and returns within it.
//
// Core NATS delivers a reply at most once: a reply can be lost (the requester's
// or the dispenser's connection breaks, a client drops it as a slow consumer).
// A lost grant is never a lost call: the request times out (the dispenser
// answers every request within MaxQueueWait, "ask again" at worst, so the
// timeout is MaxQueueWait + 2 s) and Wait asks again, or at once when the
// shard gets a new dispenser meanwhile (see newDispensers). The dispenser counts
// every grant it sends as used, whether or not it arrives: it cannot know, and
// a grant counted as unused that did arrive would let one call too many into
// a second. A lost reply costs one grant interval of the budget, never the limit.
func (c *Cluster) Wait(ctx context.Context, enterpriseID string, p Priority, opts ...WaitOption) error {
	o := waitOptionsOf(opts)
	defer o.queued() // not sent at all (ctx ended first): the next may ask
	req := grantRequest{Enterprise: enterpriseID, Priority: p, Rate: c.opts.Rate(enterpriseID)}
	if o.departure != nil {
		req.Place = o.departure.place // a grant not used: asked again at its place
	}
	head := requestHead(req)
	unanswered := 0
	var timer *time.Timer // each request's timeout, one timer for them all
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}() // requests in a row without a dispenser's answer
	for {
		lead := c.transit.currentLead()
		req.Lead = lead.Microseconds()
		body := encodeRequest(head, req)
		c.requests.Add(1)
		subject, again := c.grantSubject(enterpriseID), (<-chan struct{})(nil)
		if !c.legacy.Load() {
			again = c.elected.next(ShardOf(enterpriseID, c.opts.Shards))
		}
		msg, sentAt, recv, err := c.replies.request(ctx, c.nc, subject, body, o.queued,
			c.opts.MaxQueueWait+2*time.Second, &timer, again)
		if errors.Is(err, errNewDispenser) {
			// Its place was in the old dispenser's queue: it takes a new
			// one at the new dispenser, now rather than after its timeout.
			c.resent.Add(1)
			req.Place = Place{}
			continue
		}
		if err == nil {
			unanswered = 0
			r, err := decodeReply(msg.Data, req.Dispenser)
			ok := err == nil
			req.Place = r.Place // asked again, it keeps its place
			if !ok || !r.OK {
				continue // "ask again": waited too long in the queue, or the dispenser stepped down
			}
			c.grantsSeen.Add(1)
			c.seen()
			budget := defaultBudget
			if r.Budget != nil {
				budget = time.Duration(*r.Budget) * time.Microsecond
			}
			dep, usable := c.transit.window(&c.staleGrants, sentAt, recv, time.Duration(r.Queued)*time.Microsecond, lead, budget)
			if !usable {
				// Held on its way (a pause of this process or of NATS):
				// later grants of the enterprise may be arriving with it.
				// It is not used; the dispenser counted it already.
				c.staleGrants.Add(1)
				continue
			}
			dep.place = r.Place
			if o.departure != nil {
				*o.departure = dep
				return nil
			}
			switch err := dep.Leave(ctx); {
			case err == nil:
				return nil
			case errors.Is(err, ErrLate):
				continue // counted in Stats.Stale
			default:
				return err
			}
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		// No dispenser (election, NATS away): no call without a grant. Every
		// waiting caller asks again, so the pause grows (to a second, with
		// jitter): thousands of callers asking every 50 ms would load NATS
		// and slow the lease writes that elect the next dispenser.
		unanswered++
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-again: // a dispenser was elected meanwhile: ask it now
			unanswered = 0
		case <-time.After(retryPause(unanswered)):
		}
	}
}

// Throttled implements Limiter: every replica's grants for the enterprise slow
// down (its shard's dispenser widens its guard).
func (c *Cluster) Throttled(enterpriseID string) {
	_ = c.nc.Publish(c.throttledSubject(enterpriseID), []byte(enterpriseID))
}

// retryPause is the pause before asking again after n requests in a row got
// no dispenser's answer: 50 ms doubling to a second, each between half and
// all of that (callers that failed together ask again apart).
func retryPause(n int) time.Duration {
	d := 50 * time.Millisecond << min(n-1, 5)
	d = min(d, time.Second)
	return d/2 + rand.N(d/2+1)
}
