package ratelimit

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
)

// replies receives the dispenser's answers on one subscription, so that a
// grant request is a plain publish: its place in the dispenser's order is
// fixed when the publish returns (core NATS keeps one connection's messages in
// order), and the requester can say so before the answer comes.
//
// A request waiting for its answer holds a slot; its reply subject names the
// slot and the slot's generation, so that an answer that comes after its
// request gave up finds the slot reused (or free) and is dropped. Slots, not
// a map of tokens: a busy replica has thousands of requests waiting and
// thousands answered a second.
type replies struct {
	mu     sync.Mutex
	sub    *nats.Subscription
	prefix string // the reply subjects' prefix, ending with "."
	slots  []replySlot
	free   []int
}

type replySlot struct {
	gen uint64
	ch  chan arrival // nil while free
}

// arrival is an answer and when this replica's subscription received it:
// the time the requester takes to run after that (thousands of callers
// waking at once) is no part of the grant's way, and counts in its lead
// instead (see Departure.Leave).
type arrival struct {
	msg *nats.Msg
	at  time.Time
}

// slotBits: the low bits of a token are the slot, the others its generation.
const slotBits = 24

// request publishes body to subject, calls queued once it is published, and
// returns the answer and when it was received, or ctx's error, or
// context.DeadlineExceeded after timeout (timer is the caller's, reused
// between its requests). An answer saying that no one subscribes (no
// dispenser) is nats.ErrNoResponders, as nats.go's own requests report it.
// It also returns when the request was sent.
// It returns errNewDispenser once again is closed (the shard it was sent to
// has a new dispenser).
func (r *replies) request(ctx context.Context, nc *nats.Conn, subject string, body []byte, queued func(),
	timeout time.Duration, timer **time.Timer, again <-chan struct{}) (_ *nats.Msg, sentAt, recv time.Time, _ error) {
	slot, reply, ch, err := r.register(nc)
	if err != nil {
		return nil, sentAt, recv, err
	}
	defer r.forget(slot)
	sentAt = time.Now()
	if err := nc.PublishMsg(&nats.Msg{Subject: subject, Reply: reply, Data: body}); err != nil {
		return nil, sentAt, recv, err
	}
	queued()
	if *timer == nil {
		*timer = time.NewTimer(timeout)
	} else {
		(*timer).Reset(timeout)
	}
	select {
	case a := <-ch:
		if len(a.msg.Data) == 0 && a.msg.Header.Get("Status") == "503" {
			return nil, sentAt, a.at, nats.ErrNoResponders
		}
		return a.msg, sentAt, a.at, nil
	case <-again:
		return nil, sentAt, recv, errNewDispenser
	case <-ctx.Done():
		return nil, sentAt, recv, ctx.Err()
	case <-(*timer).C:
		return nil, sentAt, recv, context.DeadlineExceeded
	}
}

var errNewDispenser = errors.New("ratelimit: the shard has a new dispenser")

func (r *replies) register(nc *nats.Conn) (slot int, reply string, ch chan arrival, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.sub == nil {
		r.prefix = nc.NewInbox() + "."
		sub, err := nc.Subscribe(r.prefix+"*", r.deliver)
		if err != nil {
			return 0, "", nil, err
		}
		// Answers come at the rate of grants; a slow requester must never
		// make the connection drop one.
		_ = sub.SetPendingLimits(-1, -1)
		r.sub = sub
	}
	if n := len(r.free); n > 0 {
		slot, r.free = r.free[n-1], r.free[:n-1]
	} else if len(r.slots) < 1<<slotBits {
		slot = len(r.slots)
		r.slots = append(r.slots, replySlot{})
	} else {
		return 0, "", nil, errTooManyRequests
	}
	s := &r.slots[slot]
	s.gen++
	s.ch = make(chan arrival, 1)
	b := make([]byte, 0, len(r.prefix)+13)
	b = append(b, r.prefix...)
	b = strconv.AppendUint(b, s.gen<<slotBits|uint64(slot), 36)
	return slot, string(b), s.ch, nil
}

var errTooManyRequests = errors.New("ratelimit: too many grant requests waiting at once")

func (r *replies) forget(slot int) {
	r.mu.Lock()
	r.slots[slot].ch = nil
	r.free = append(r.free, slot)
	r.mu.Unlock()
}

func (r *replies) deliver(m *nats.Msg) {
	at := time.Now()
	token, err := strconv.ParseUint(m.Subject[strings.LastIndexByte(m.Subject, '.')+1:], 36, 64)
	if err != nil {
		return
	}
	slot, gen := int(token&(1<<slotBits-1)), token>>slotBits
	r.mu.Lock()
	var ch chan arrival
	if slot < len(r.slots) && r.slots[slot].gen == gen {
		ch = r.slots[slot].ch
		r.slots[slot].ch = nil // one answer per request
	}
	r.mu.Unlock()
	if ch != nil {
		ch <- arrival{m, at} // buffered: one answer per request
	}
}
