package clusterstatus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/xygroup/xygroup/worker"
	"github.com/xygroup/xygroup/worker/contract"
)

// CommandEvent is one event of a command.
type CommandEvent struct {
	Subject string `json:"subject"`
	// Seq is its sequence in the events stream; 0 when it is shown as the
	// command's record holds it.
	Seq   uint64          `json:"seq,omitempty"`
	At    time.Time       `json:"at,omitzero"`
	Event contract.Event  `json:"-"`
	Body  json.RawMessage `json:"body"`
}

// Command is one command as the cluster knows it: its record (calls, state
// and outcome) and its terminal event.
type Command struct {
	EnterpriseID string               `json:"enterpriseId"`
	CommandID    string               `json:"commandId"`
	Record       worker.CommandDetail `json:"record"`
	// Terminal is its terminal event: read from the events stream at the
	// sequence the record names, else (an older record, or an event the
	// stream no longer holds) as the record holds it. Nil while it has none.
	Terminal *CommandEvent `json:"terminal,omitempty"`
}

// LookupCommand reads an enterprise's command: its record, and its terminal
// event by the one stream get the record points to. It never searches the
// events stream, so what it costs does not grow with the stream.
func LookupCommand(ctx context.Context, js jetstream.JetStream, enterpriseID, commandID string) (*Command, error) {
	out := &Command{EnterpriseID: enterpriseID, CommandID: commandID}
	var err error
	if out.Record, err = worker.InspectCommand(ctx, js, enterpriseID, commandID); err != nil {
		return nil, err
	}
	rec := out.Record
	if rec.Terminal == "" {
		return out, nil
	}
	if rec.EventSeq > 0 {
		ev, err := eventAt(ctx, js, rec.EventSeq, enterpriseID, commandID)
		if err != nil {
			return nil, err
		}
		if ev != nil {
			out.Terminal = ev
			return out, nil
		}
	}
	if len(rec.TerminalEvent) > 0 {
		ev := &CommandEvent{Subject: rec.Terminal, Body: rec.TerminalEvent}
		if json.Unmarshal(rec.TerminalEvent, &ev.Event) == nil {
			ev.At = ev.Event.OccurredAt
		}
		out.Terminal = ev
	}
	return out, nil
}

// eventAt reads the event at seq if it is still stored and is this
// command's (nil otherwise).
func eventAt(ctx context.Context, js jetstream.JetStream, seq uint64, enterpriseID, commandID string) (*CommandEvent, error) {
	s, err := js.Stream(ctx, contract.StreamEvents)
	if err != nil {
		return nil, fmt.Errorf("events stream: %w", err)
	}
	m, err := s.GetMsg(ctx, seq)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, nil // gone with the stream's limits
	}
	if err != nil {
		return nil, fmt.Errorf("events stream: event %d: %w", seq, err)
	}
	if id := contract.IdentityOf(m.Data); id.CommandID != commandID || id.EnterpriseID != enterpriseID {
		return nil, nil
	}
	ev := &CommandEvent{Subject: m.Subject, Seq: m.Sequence, At: m.Time, Body: m.Data}
	if json.Unmarshal(m.Data, &ev.Event) == nil && !ev.Event.OccurredAt.IsZero() {
		ev.At = ev.Event.OccurredAt
	}
	return ev, nil
}
