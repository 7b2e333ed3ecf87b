package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// The contract's names, spelt out here rather than taken from the project.
const (
	StreamCommands  = "XYLINK_GROUP_COMMANDS"
	StreamEvents    = "XYLINK_GROUP_EVENTS"
	SubjectCreate   = "xylink.groups.create"
	SubjectCreated  = "xylink.groups.created"
	SubjectFailedPf = "xylink.groups.failed."
	SubjectWaiting  = "xylink.groups.waiting"
	// SubjectCancelRejected answers a cancel that could not cancel a command;
	// the command goes on to its own terminal event.
	SubjectCancelRejected = "xylink.groups.cancel_rejected"
	// ConsumerWorkers is the workers' shared durable consumer (README, "Streams").
	ConsumerWorkers = "xygroup-workers"
)

// Event is one message of the events stream.
type Event struct {
	Subject string
	Seq     uint64
	Stored  time.Time // the stream's timestamp
	Data    []byte
	// MsgID is the event's Nats-Msg-Id (a replay's terminal events name it).
	MsgID    string
	Fields   map[string]any
	ParseErr error
}

// CommandID is the event's commandId.
func (e Event) CommandID() string { s, _ := e.Fields["commandId"].(string); return s }

// Outcome is "created", "failed.<class>" or "waiting".
func (e Event) Outcome() string {
	switch {
	case e.Subject == SubjectCreated:
		return "created"
	case strings.HasPrefix(e.Subject, SubjectFailedPf):
		return "failed." + strings.TrimPrefix(e.Subject, SubjectFailedPf)
	case e.Subject == SubjectWaiting:
		return "waiting"
	}
	return e.Subject
}

// Terminal reports whether the event ends its command.
func (e Event) Terminal() bool {
	return e.Subject == SubjectCreated || strings.HasPrefix(e.Subject, SubjectFailedPf)
}

// EventLog reads every event of the events stream with an ordered consumer, in
// the background, from the stream's first message.
type EventLog struct {
	mu     sync.Mutex
	events []Event
	last   uint64
	err    error
	live   bool // a consumer was created
	cancel context.CancelFunc
	done   chan struct{}
}

// FollowEvents starts reading; it stops at cleanup. The stream may not exist
// yet (the workers create it): the log waits for it.
func FollowEvents(tb testing.TB, js jetstream.JetStream) *EventLog {
	ctx, cancel := context.WithCancel(context.Background())
	l := &EventLog{cancel: cancel, done: make(chan struct{})}
	go l.run(ctx, js)
	tb.Cleanup(func() { cancel(); <-l.done })
	return l
}

func (l *EventLog) run(ctx context.Context, js jetstream.JetStream) {
	defer close(l.done)
	for ctx.Err() == nil {
		if err := l.read(ctx, js); err != nil && ctx.Err() == nil {
			l.mu.Lock()
			l.err = err
			l.mu.Unlock()
			select {
			case <-ctx.Done():
			case <-time.After(250 * time.Millisecond):
			}
		}
	}
}

// read follows the stream from the message after the last one read until an
// error (a consumer lost with a node, a stream not yet there).
func (l *EventLog) read(ctx context.Context, js jetstream.JetStream) error {
	l.mu.Lock()
	start := l.last + 1
	l.mu.Unlock()
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	cons, err := js.OrderedConsumer(cctx, StreamEvents, jetstream.OrderedConsumerConfig{
		DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: start})
	cancel()
	if err != nil {
		return err
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(500))
	if err != nil {
		return err
	}
	l.mu.Lock()
	l.live = true
	l.mu.Unlock()
	defer it.Stop()
	go func() { <-ctx.Done(); it.Stop() }()
	for {
		msg, err := it.Next()
		if err != nil {
			if errors.Is(err, jetstream.ErrMsgIteratorClosed) {
				return nil
			}
			return err
		}
		meta, err := msg.Metadata()
		if err != nil {
			continue
		}
		ev := Event{Subject: msg.Subject(), Seq: meta.Sequence.Stream, Stored: meta.Timestamp, Data: append([]byte(nil), msg.Data()...),
			MsgID: msg.Headers().Get(nats.MsgIdHdr)}
		ev.ParseErr = json.Unmarshal(ev.Data, &ev.Fields)
		l.mu.Lock()
		if ev.Seq > l.last {
			l.events = append(l.events, ev)
			l.last = ev.Seq
		}
		l.mu.Unlock()
	}
}

// Live reports whether the log follows the stream (a consumer was created).
func (l *EventLog) Live() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.live
}

// Events returns the events read so far.
func (l *EventLog) Events() []Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]Event(nil), l.events...)
}

// LastSeq is the stream sequence of the last event read.
func (l *EventLog) LastSeq() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.last
}

// ByCommand groups the events by commandId.
func (l *EventLog) ByCommand() map[string][]Event {
	out := map[string][]Event{}
	for _, e := range l.Events() {
		out[e.CommandID()] = append(out[e.CommandID()], e)
	}
	return out
}

// Ended counts the given commands that have a terminal event.
func (l *EventLog) Ended(ids []string) int {
	by := l.ByCommand()
	n := 0
	for _, id := range ids {
		for _, e := range by[id] {
			if e.Terminal() {
				n++
				break
			}
		}
	}
	return n
}

// AwaitEnded waits up to d until every command has a terminal event, and gives
// up early when no command ended for StallTimeout; it returns how many have one.
func (l *EventLog) AwaitEnded(ids []string, d time.Duration) int {
	n, progress := 0, time.Now()
	until(d, 100*time.Millisecond, func() bool {
		if m := l.Ended(ids); m != n {
			n, progress = m, time.Now()
		}
		return n == len(ids) || time.Since(progress) > StallTimeout
	})
	return n
}

// StallTimeout is how long AwaitEnded waits without any command ending: longer
// than any quiet spell of a healthy run (an outage, a probe interval).
var StallTimeout = 45 * time.Second

// AwaitQuiet waits until no event arrived for quiet (at most d), so that a
// late duplicate is seen before the check.
func (l *EventLog) AwaitQuiet(quiet, d time.Duration) {
	last, since := l.LastSeq(), time.Now()
	until(d, 100*time.Millisecond, func() bool {
		if s := l.LastSeq(); s != last {
			last, since = s, time.Now()
		}
		return time.Since(since) >= quiet
	})
}

// CreatedBetween counts created events stored in [from, to).
func (l *EventLog) CreatedBetween(from, to time.Time) int {
	n := 0
	for _, e := range l.Events() {
		if e.Subject == SubjectCreated && !e.Stored.Before(from) && e.Stored.Before(to) {
			n++
		}
	}
	return n
}

// Publisher publishes commands with raw nats.go, Nats-Msg-Id = commandId.
type Publisher struct {
	js jetstream.JetStream
}

// AwaitStream waits until the commands stream exists and takes a publish (the
// workers create it; a new replicated stream has no leader at first).
func AwaitStream(tb testing.TB, js jetstream.JetStream, d time.Duration) *Publisher {
	tb.Helper()
	err := poll(d, 200*time.Millisecond, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		s, err := js.Stream(ctx, StreamCommands)
		if err != nil {
			return err
		}
		info, err := s.Info(ctx)
		if err != nil {
			return err
		}
		if info.Cluster != nil && info.Cluster.Leader == "" {
			return fmt.Errorf("no leader yet")
		}
		_, err = js.Stream(ctx, StreamEvents)
		return err
	})
	if err != nil {
		tb.Fatalf("streams not ready: %v", err)
	}
	return &Publisher{js: js}
}

// Publish publishes one command, retrying (same Nats-Msg-Id, so the stream
// dedupes) until it is stored or d passes.
func (p *Publisher) Publish(c Command, d time.Duration) error {
	return poll(d, 200*time.Millisecond, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		msg := &nats.Msg{Subject: SubjectCreate, Data: c.Payload, Header: nats.Header{}}
		if c.ID != "" {
			msg.Header.Set(nats.MsgIdHdr, c.ID)
		}
		_, err := p.js.PublishMsg(ctx, msg)
		return err
	})
}

// PublishAll publishes commands in order; it fails the test on the first
// command that cannot be stored within a minute.
func (p *Publisher) PublishAll(tb testing.TB, cmds []Command) {
	tb.Helper()
	for _, c := range cmds {
		if err := p.Publish(c, time.Minute); err != nil {
			tb.Fatalf("publish %s: %v", c.ID, err)
		}
	}
}
