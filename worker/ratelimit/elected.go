package ratelimit

import (
	"strconv"
	"strings"
	"sync"

	"github.com/nats-io/nats.go"
)

// newDispensers tells the requests waiting on a shard that it has a new
// dispenser. A dispenser cut off from the cluster answers nothing, and its
// requests would otherwise wait for their timeout (MaxQueueWait + 2 s)
// before asking again, seconds after the next dispenser was elected: each
// new dispenser publishes SubjectElected.<shards>.<shard> once subscribed,
// and the requests then waiting on that shard are sent to it at once.
//
// A request sent again leaves its first copy behind. If that copy still
// reaches a dispenser (the old one, or the new one when the election came
// between the request's sending and its wait), its grant finds no one
// waiting and is dropped: the dispenser counted it, so it costs one grant
// interval of the budget, never the limit (as any lost reply).
type newDispensers struct {
	mu sync.Mutex
	// ch: per shard, closed when a new dispenser announces itself.
	ch  map[int]chan struct{}
	sub *nats.Subscription
}

func (e *newDispensers) follow(nc *nats.Conn, shards int) error {
	sub, err := nc.Subscribe(SubjectElected+"."+strconv.Itoa(shards)+".*", func(m *nats.Msg) {
		n, err := strconv.Atoi(m.Subject[strings.LastIndexByte(m.Subject, '.')+1:])
		if err != nil {
			return
		}
		e.mu.Lock()
		if ch := e.ch[n]; ch != nil {
			close(ch)
			delete(e.ch, n)
		}
		e.mu.Unlock()
	})
	if err != nil {
		return err
	}
	e.mu.Lock()
	e.sub = sub
	e.mu.Unlock()
	return nil
}

// next returns a channel closed when shard n next gets a new dispenser; it
// is taken before a request is sent, so that an election while it is on its
// way is not missed.
func (e *newDispensers) next(n int) <-chan struct{} {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.ch == nil {
		e.ch = map[int]chan struct{}{}
	}
	ch := e.ch[n]
	if ch == nil {
		ch = make(chan struct{})
		e.ch[n] = ch
	}
	return ch
}

// announce: this replica is now shard n's dispenser (its grant subscription
// is in place, and interest travels ahead of the announcement on every route).
func (c *Cluster) announce(n int) {
	_ = c.nc.Publish(shardSubject(SubjectElected, c.opts.Shards, n), nil)
}
