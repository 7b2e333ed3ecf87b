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

// Publish stores one command on xylink.groups.create with Nats-Msg-Id set to
// MsgID(enterpriseId, commandId), and returns the commandId, which its events
// will carry. A command without one is given "cli-…" as its Nats-Msg-Id, which
// the worker takes as its commandId.
func Publish(ctx context.Context, js jetstream.JetStream, raw []byte, headers nats.Header) (string, error) {
	ref, err := PublishRef(ctx, js, raw, headers)
	return ref.CommandID, err
}

// Ref names a command within its tenant. EnterpriseID is empty when the
// command names none (the workers' default tenant).
type Ref struct {
	EnterpriseID string
	CommandID    string
}

// MsgID is the Nats-Msg-Id Publish gives a command: its commandId, prefixed
// with "<enterpriseId>/" when the command names its tenant, so that the commands
// stream's dedupe never takes one tenant's command for another's. Both may hold
// a "/": in the enterpriseId "%" and "/" are written %25 and %2F, and a
// commandId without a tenant that holds a "/" is written after a "/", so that
// no two (enterpriseId, commandId) pairs share a Nats-Msg-Id.
func MsgID(enterpriseID, commandID string) string {
	if enterpriseID == "" {
		if strings.Contains(commandID, "/") {
			return "/" + commandID
		}
		return commandID
	}
	e := strings.NewReplacer("%", "%25", "/", "%2F").Replace(enterpriseID)
	return e + "/" + commandID
}

// PublishRef is Publish returning the command's tenant as the command names it.
func PublishRef(ctx context.Context, js jetstream.JetStream, raw []byte, headers nats.Header) (Ref, error) {
	var peek struct {
		CommandID    string `json:"commandId"`
		EnterpriseID string `json:"enterpriseId"`
	}
	_ = json.Unmarshal(raw, &peek)
	ref := Ref{EnterpriseID: peek.EnterpriseID, CommandID: peek.CommandID}
	// Two tenants may use one commandId: the stream's dedupe must not take
	// one's command for the other's. A generated id is unique as it is, and the
	// worker takes it as the commandId: it stays bare.
	msgID := MsgID(peek.EnterpriseID, peek.CommandID)
	if ref.CommandID == "" {
		ref.CommandID = "cli-" + nuid.Next()
		msgID = ref.CommandID
	}
	id := ref.CommandID
	m := nats.NewMsg(SubjectCreate)
	m.Data = raw
	for k, v := range headers {
		m.Header[k] = v
	}
	m.Header.Set(nats.MsgIdHdr, msgID)
	for delay := 100 * time.Millisecond; ; delay = min(2*delay, 2*time.Second) {
		_, err := js.PublishMsg(ctx, m)
		if err == nil {
			return ref, nil
		}
		// No stream yet (no worker has started) or no leader yet: wait for it.
		if !errors.Is(err, nats.ErrNoResponders) && !errors.Is(err, jetstream.ErrNoStreamResponse) {
			return Ref{}, fmt.Errorf("publish %s: %w", id, err)
		}
		select {
		case <-ctx.Done():
			return Ref{}, fmt.Errorf("publish %s: no stream answers on %s (is a worker running?): %w", id, SubjectCreate, err)
		case <-time.After(delay):
		}
	}
}

// Event is a terminal event as received.
type Event struct {
	Subject      string
	CommandID    string
	EnterpriseID string
	Failed       bool
	Data         json.RawMessage
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
// until all have one or ctx ends. An id is taken for any tenant's: when
// tenants share commandIds, use AwaitRefs.
func (w *Waiter) Await(ctx context.Context, ids []string, found func(Event)) error {
	refs := make([]Ref, len(ids))
	for i, id := range ids {
		refs[i] = Ref{CommandID: id}
	}
	return w.AwaitRefs(ctx, refs, found)
}

// AwaitRefs calls found for the terminal event of each command, in the order
// they come, until all have one or ctx ends. A Ref with an EnterpriseID takes
// only that tenant's event; one without (a command that names no tenant: the
// workers' default) takes the first event with its commandId.
func (w *Waiter) AwaitRefs(ctx context.Context, refs []Ref, found func(Event)) error {
	pending := make(map[Ref]bool, len(refs))
	for _, r := range refs {
		pending[r] = true
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
			CommandID    string `json:"commandId"`
			EnterpriseID string `json:"enterpriseId"`
		}
		_ = json.Unmarshal(msg.Data(), &e)
		r := Ref{EnterpriseID: e.EnterpriseID, CommandID: e.CommandID}
		if !pending[r] {
			if r.EnterpriseID = ""; !pending[r] {
				continue
			}
		}
		delete(pending, r)
		found(Event{Subject: msg.Subject(), CommandID: e.CommandID, EnterpriseID: e.EnterpriseID, Data: msg.Data(),
			Failed: strings.HasPrefix(msg.Subject(), SubjectFailed+".")})
	}
	return nil
}

func ptr[T any](v T) *T { return &v }
