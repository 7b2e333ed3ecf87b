package commands

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
)

// Subjects, as in the contract.
const (
	SubjectCreate  = "xylink.groups.create"
	SubjectCreated = "xylink.groups.created"
	SubjectFailed  = "xylink.groups.failed"
	StreamEvents   = "XYLINK_GROUP_EVENTS"
)

// Publish stores one command on xylink.groups.create with Nats-Msg-Id set to its
// commandId (one is generated, "cli-…", when it has none), prefixed with
// "<enterpriseId>/" when the command names its tenant, and returns the
// commandId, which its events will carry.
func Publish(ctx context.Context, js jetstream.JetStream, raw []byte, headers nats.Header) (string, error) {
	var peek struct {
		CommandID    string `json:"commandId"`
		EnterpriseID string `json:"enterpriseId"`
	}
	_ = json.Unmarshal(raw, &peek)
	id := peek.CommandID
	if id == "" {
		id = "cli-" + nuid.Next()
	}
	m := nats.NewMsg(SubjectCreate)
	m.Data = raw
	for k, v := range headers {
		m.Header[k] = v
	}
	// Two tenants may use one commandId: the stream's dedupe must not take
	// one's command for the other's.
	msgID := id
	if peek.EnterpriseID != "" {
		msgID = peek.EnterpriseID + "/" + id
	}
	m.Header.Set(nats.MsgIdHdr, msgID)
	for delay := 100 * time.Millisecond; ; delay = min(2*delay, 2*time.Second) {
		_, err := js.PublishMsg(ctx, m)
		if err == nil {
			return id, nil
		}
		// No stream yet (no worker has started) or no leader yet: wait for it.
		if !errors.Is(err, nats.ErrNoResponders) && !errors.Is(err, jetstream.ErrNoStreamResponse) {
			return "", fmt.Errorf("publish %s: %w", id, err)
		}
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("publish %s: no stream answers on %s (is a worker running?): %w", id, SubjectCreate, err)
		case <-time.After(delay):
		}
	}
}

// Event is a terminal event as received.
type Event struct {
	Subject   string
	CommandID string
	Failed    bool
	Data      json.RawMessage
}

// Waiter follows the terminal events from a point in time, so that commands
// published after it is made cannot be missed.
type Waiter struct {
	cons jetstream.Consumer
}

// NewWaiter starts following terminal events stored since `since` ago (the
// events stream's dedupe window, one hour, covers a command completed earlier
// and published again).
func NewWaiter(ctx context.Context, js jetstream.JetStream, since time.Duration) (*Waiter, error) {
	cons, err := js.OrderedConsumer(ctx, StreamEvents, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{SubjectCreated, SubjectFailed + ".>"},
		DeliverPolicy:  jetstream.DeliverByStartTimePolicy,
		OptStartTime:   ptr(time.Now().Add(-since)),
	})
	if err != nil {
		return nil, fmt.Errorf("follow events: %w", err)
	}
	return &Waiter{cons: cons}, nil
}

// Await calls found for the terminal event of each id, in the order they come,
// until all have one or ctx ends.
func (w *Waiter) Await(ctx context.Context, ids []string, found func(Event)) error {
	pending := make(map[string]bool, len(ids))
	for _, id := range ids {
		pending[id] = true
	}
	for len(pending) > 0 {
		wait := 5 * time.Second
		if d, ok := ctx.Deadline(); ok {
			wait = min(wait, time.Until(d))
		}
		if wait <= 0 || ctx.Err() != nil {
			return fmt.Errorf("%d command(s) without a terminal event yet: %w", len(pending), context.DeadlineExceeded)
		}
		msg, err := w.cons.Next(jetstream.FetchMaxWait(wait))
		if errors.Is(err, nats.ErrTimeout) || errors.Is(err, context.DeadlineExceeded) {
			continue
		}
		if err != nil {
			return fmt.Errorf("follow events: %w", err)
		}
		var e struct {
			CommandID string `json:"commandId"`
		}
		_ = json.Unmarshal(msg.Data(), &e)
		if !pending[e.CommandID] {
			continue
		}
		delete(pending, e.CommandID)
		found(Event{Subject: msg.Subject(), CommandID: e.CommandID, Data: msg.Data(),
			Failed: strings.HasPrefix(msg.Subject(), SubjectFailed+".")})
	}
	return nil
}

func ptr[T any](v T) *T { return &v }
