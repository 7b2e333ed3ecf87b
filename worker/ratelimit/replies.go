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
type replies struct {
	mu      sync.Mutex
	sub     *nats.Subscription
	prefix  string // the reply subjects' prefix, ending with "."
	next    uint64
	waiting map[string]chan *nats.Msg
}

// request publishes body to subject, calls queued once it is published, and
// returns the answer. An answer saying that no one subscribes (no dispenser)
// is nats.ErrNoResponders, as nats.go's own requests report it.
// It also returns when the request was sent.
// It returns errNewDispenser once again is closed (the shard it was sent to
// has a new dispenser).
func (r *replies) request(ctx context.Context, nc *nats.Conn, subject string, body []byte, queued func(), again <-chan struct{}) (*nats.Msg, time.Time, error) {
	token, ch, err := r.register(nc)
	if err != nil {
		return nil, time.Time{}, err
	}
	defer r.forget(token)
	sentAt := time.Now()
	if err := nc.PublishMsg(&nats.Msg{Subject: subject, Reply: r.prefix + token, Data: body}); err != nil {
		return nil, sentAt, err
	}
	queued()
	select {
	case m := <-ch:
		if len(m.Data) == 0 && m.Header.Get("Status") == "503" {
			return nil, sentAt, nats.ErrNoResponders
		}
		return m, sentAt, nil
	case <-again:
		return nil, sentAt, errNewDispenser
	case <-ctx.Done():
		return nil, sentAt, ctx.Err()
	}
}

var errNewDispenser = errors.New("ratelimit: the shard has a new dispenser")

func (r *replies) register(nc *nats.Conn) (string, chan *nats.Msg, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.sub == nil {
		r.prefix = nc.NewInbox() + "."
		sub, err := nc.Subscribe(r.prefix+"*", r.deliver)
		if err != nil {
			return "", nil, err
		}
		// Answers come at the rate of grants; a slow requester must never
		// make the connection drop one.
		_ = sub.SetPendingLimits(-1, -1)
		r.sub, r.waiting = sub, map[string]chan *nats.Msg{}
	}
	r.next++
	token := strconv.FormatUint(r.next, 36)
	ch := make(chan *nats.Msg, 1)
	r.waiting[token] = ch
	return token, ch, nil
}

func (r *replies) forget(token string) {
	r.mu.Lock()
	delete(r.waiting, token)
	r.mu.Unlock()
}

func (r *replies) deliver(m *nats.Msg) {
	token := m.Subject[strings.LastIndexByte(m.Subject, '.')+1:]
	r.mu.Lock()
	ch := r.waiting[token]
	delete(r.waiting, token)
	r.mu.Unlock()
	if ch != nil {
		ch <- m // buffered: one answer per request
	}
}
