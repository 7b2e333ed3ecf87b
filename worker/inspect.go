package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/xygroup/xygroup/worker/record"
)

// ParkedCommand is one command stored under a waiting meeting, a tenant's
// hold or a tenant's lane, for the status page.
type ParkedCommand struct {
	CommandID    string    `json:"commandId"`
	EnterpriseID string    `json:"enterpriseId"`
	Meeting      string    `json:"meetingRoomNumber"`
	Deadline     time.Time `json:"deadline"`
	ReceivedAt   time.Time `json:"receivedAt"`
	Replay       bool      `json:"replay,omitempty"`
}

// ParkedCommands lists the first limit commands stored under m, oldest
// first, and whether more are stored. Deadlines are as this replica's
// settings (its maximum wait) make them.
func (w *Worker) ParkedCommands(ctx context.Context, m ParkedMeeting, limit int) ([]ParkedCommand, bool, error) {
	parked, err := w.js.Stream(ctx, StreamParked)
	if err != nil {
		return nil, false, fmt.Errorf("parked stream: %w", err)
	}
	token := meetingToken(m.EnterpriseID, m.Meeting)
	switch m.Kind {
	case kindHold:
		token = holdToken(m.EnterpriseID)
	case kindLane:
		token = laneToken(m.EnterpriseID)
	}
	var out []ParkedCommand
	for next := uint64(1); ; {
		msg, err := parked.GetMsg(ctx, next, jetstream.WithGetMsgSubject(parkedSubject(token)))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return out, false, nil
		}
		if err != nil {
			return out, false, fmt.Errorf("parked commands: %w", err)
		}
		if len(out) == limit {
			return out, true, nil
		}
		next = msg.Sequence + 1
		del := parkedDelivery(msg.Data, msg.Header, 0, fromProbe, msg.Sequence, msg.Time)
		d := w.p.decoder.decode(del.data, del.header, del.stream, del.seq, time.Time{})
		out = append(out, ParkedCommand{CommandID: d.ID, EnterpriseID: d.EnterpriseID, Meeting: d.MeetingRoomNumber,
			Deadline: w.p.deadlineOf(d, del), ReceivedAt: del.received, Replay: d.ReplayID != ""})
	}
}

// CommandDetail is what a command's idempotency record says of it: its calls
// and its outcome, for the status page (LookupCommand: the part tools use).
type CommandDetail struct {
	Known    bool `json:"known"`
	Attempts int  `json:"attempts"`
	// Sent is the last attempt whose request may have left; MaybeCreated: an
	// earlier call may have created the groups without an answer.
	Sent         int       `json:"sent,omitempty"`
	MaybeCreated bool      `json:"maybeCreated,omitempty"`
	PendingUntil time.Time `json:"pendingUntil,omitzero"`
	// LastAnswer is the API's last answer to it.
	LastHTTPStatus int    `json:"lastHttpStatus,omitempty"`
	LastErrorCode  int    `json:"lastErrorCode,omitempty"`
	LastMessage    string `json:"lastMessage,omitempty"`
	Waiting        bool   `json:"waiting,omitempty"`
	ReplayID       string `json:"replayId,omitempty"`
	// Terminal is its terminal event's subject, once published.
	Terminal      string          `json:"terminal,omitempty"`
	TerminalEvent json.RawMessage `json:"terminalEvent,omitempty"`
	// EventSeq is the terminal event's sequence in the events stream (0:
	// none, or a record written before it was kept). TerminalEvent is the
	// record's copy: a failed event's command is left out of it (record.State).
	EventSeq     uint64 `json:"eventSeq,omitempty"`
	Cancelled    bool   `json:"cancelled,omitempty"`
	CancelReason string `json:"cancelReason,omitempty"`
}

// InspectCommand reads an enterprise's command's record.
func InspectCommand(ctx context.Context, js jetstream.JetStream, enterpriseID, commandID string) (CommandDetail, error) {
	kv, err := js.KeyValue(ctx, BucketCommands)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return CommandDetail{}, nil
	}
	if err != nil {
		return CommandDetail{}, err
	}
	e, err := kv.Get(ctx, record.Key(enterpriseID, commandID))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		e, err = kv.Get(ctx, record.LegacyKey(commandID))
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			return CommandDetail{}, nil
		}
	}
	if err != nil {
		return CommandDetail{}, fmt.Errorf("idempotency record: %w", err)
	}
	var r commandRecord
	if err := json.Unmarshal(e.Value(), &r); err != nil {
		return CommandDetail{}, fmt.Errorf("idempotency record %s: %w", commandID, err)
	}
	if r.Terminal != nil && e.Key() == record.LegacyKey(commandID) && !record.TerminalIsTenants(r.Terminal.Body, enterpriseID) {
		return CommandDetail{}, nil
	}
	st := CommandDetail{Known: true, Attempts: r.Attempts, Sent: r.Sent, MaybeCreated: r.MaybeCreated, PendingUntil: r.PendingUntil,
		Waiting: r.Waiting, ReplayID: r.ReplayID}
	if r.Last != nil {
		st.LastHTTPStatus, st.LastErrorCode = r.Last.HTTPStatus, r.Last.ErrorCode
		st.LastMessage = r.Last.DeveloperMessage
		if st.LastMessage == "" {
			st.LastMessage = r.Last.UserMessage
		}
	}
	if r.Terminal != nil {
		st.Terminal, st.TerminalEvent, st.EventSeq = r.Terminal.Subject, r.Terminal.Body, r.EventSeq
	}
	if r.Cancelled != nil {
		st.Cancelled, st.CancelReason = true, r.Cancelled.Reason
	}
	return st, nil
}
