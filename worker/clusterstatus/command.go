package clusterstatus

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/xygroup/xygroup/worker"
	"github.com/xygroup/xygroup/worker/contract"
)

// CommandEvent is one event of a command.
type CommandEvent struct {
	Subject string          `json:"subject"`
	Seq     uint64          `json:"seq"`
	At      time.Time       `json:"at"`
	Event   contract.Event  `json:"-"`
	Body    json.RawMessage `json:"body"`
}

// Command is one command as the cluster knows it: its record (calls and
// outcome) and its events among the stream's latest.
type Command struct {
	EnterpriseID string               `json:"enterpriseId"`
	CommandID    string               `json:"commandId"`
	Record       worker.CommandDetail `json:"record"`
	Events       []CommandEvent       `json:"events"`
	// Searched is how many of the latest events were searched for Events.
	Searched uint64 `json:"searched"`
}

// LookupCommand reads an enterprise's command: its record, and its events
// among the last window of the events stream (newest first).
func LookupCommand(ctx context.Context, js jetstream.JetStream, enterpriseID, commandID string, window uint64) (*Command, error) {
	out := &Command{EnterpriseID: enterpriseID, CommandID: commandID}
	var err error
	if out.Record, err = worker.InspectCommand(ctx, js, enterpriseID, commandID); err != nil {
		return nil, err
	}
	s, err := js.Stream(ctx, contract.StreamEvents)
	if err != nil {
		return nil, fmt.Errorf("events stream: %w", err)
	}
	out.Searched, err = scanBackward(ctx, s, s.CachedInfo().State, window, func(m *jetstream.RawStreamMsg) bool {
		id := contract.IdentityOf(m.Data)
		if id.CommandID != commandID || id.EnterpriseID != enterpriseID {
			return false
		}
		var ev contract.Event
		_ = json.Unmarshal(m.Data, &ev)
		out.Events = append(out.Events, CommandEvent{Subject: m.Subject, Seq: m.Sequence, At: ev.OccurredAt, Event: ev, Body: m.Data})
		return false
	})
	return out, err
}
