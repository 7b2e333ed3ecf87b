package worker

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go"

	"github.com/xygroup/xygroup/xylink"
)

// Subjects and streams of the contract.
const (
	SubjectCreate   = "xylink.groups.create"
	SubjectCreated  = "xylink.groups.created"
	SubjectFailed   = "xylink.groups.failed" // + "." + class
	SubjectWaiting  = "xylink.groups.waiting"
	StreamCommands  = "XYLINK_GROUP_COMMANDS"
	StreamEvents    = "XYLINK_GROUP_EVENTS"
	ConsumerWorkers = "xygroup-workers"
)

// CloudEvents types.
const (
	TypeCreated = "com.xylink.groups.created"
	TypeFailed  = "com.xylink.groups.failed"
	TypeWaiting = "com.xylink.groups.waiting"
)

// Envelope is what every event carries.
type Envelope struct {
	EventID           string    `json:"eventId"`
	CommandID         string    `json:"commandId"`
	EnterpriseID      string    `json:"enterpriseId"`
	MeetingRoomNumber string    `json:"meetingRoomNumber"`
	Attempts          int       `json:"attempts"`
	OccurredAt        time.Time `json:"occurredAt"`
}

// CreatedEvent: the groups were created.
type CreatedEvent struct {
	Envelope
	Groups     []xylink.Group `json:"groups"`
	Reconciled bool           `json:"reconciled,omitempty"`
}

// FailedEvent: the command failed for good, with its class.
type FailedEvent struct {
	Envelope
	Class            xylink.Class    `json:"class"`
	ErrorCode        *int            `json:"errorCode,omitempty"`
	HTTPStatus       *int            `json:"httpStatus,omitempty"`
	UserMessage      string          `json:"userMessage"`
	DeveloperMessage string          `json:"developerMessage"`
	Command          json.RawMessage `json:"command"`
	CommandEncoding  string          `json:"commandEncoding,omitempty"`
}

// WaitingEvent: the meeting has not started; the command waits.
type WaitingEvent struct {
	Envelope
	Deadline      time.Time `json:"deadline"`
	NextAttemptAt time.Time `json:"nextAttemptAt"`
}

// outEvent is an event ready to publish.
type outEvent struct {
	subject string
	ceType  string
	msgID   string
	eventID string
	body    any
}

// terminalMsgID is the Nats-Msg-Id of a command's terminal event, whichever it is:
// a redelivered or replayed command cannot store a second one in the dedupe window.
func terminalMsgID(commandID string) string { return "xygroup.terminal." + commandID }

// terminalID is the terminal Nats-Msg-Id of this handling: a replay's terminal
// event is its own (the command's failure is already in the stream).
func terminalID(d *Decoded) string {
	if d.ReplayID != "" {
		return terminalMsgID(d.ID) + ".replay." + d.ReplayID
	}
	return terminalMsgID(d.ID)
}
func waitingMsgID(commandID string) string { return "xygroup.waiting." + commandID }

// eventID derives a UUID-shaped id (version 5 layout over SHA-256) from the msg id,
// so a duplicate event has the same id and consumers can dedupe on it.
func eventID(msgID string) string {
	h := sha256.Sum256([]byte(msgID))
	h[6] = (h[6] & 0x0f) | 0x50
	h[8] = (h[8] & 0x3f) | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", h[0:4], h[4:6], h[6:8], h[8:10], h[10:16])
}

func envelope(d *Decoded, msgID string, attempts int, now time.Time) Envelope {
	return Envelope{EventID: eventID(msgID), CommandID: d.ID, EnterpriseID: d.EnterpriseID,
		MeetingRoomNumber: d.MeetingRoomNumber, Attempts: attempts, OccurredAt: now.UTC()}
}

func createdEvent(d *Decoded, groups []xylink.Group, reconciled bool, attempts int, now time.Time) *outEvent {
	id := terminalID(d)
	if groups == nil {
		groups = []xylink.Group{}
	}
	return &outEvent{subject: SubjectCreated, ceType: TypeCreated, msgID: id, eventID: eventID(id),
		body: &CreatedEvent{Envelope: envelope(d, id, attempts, now), Groups: groups, Reconciled: reconciled}}
}

// failure is what a failed event says beyond its class.
type failure struct {
	class            xylink.Class
	errorCode        int
	httpStatus       int
	userMessage      string
	developerMessage string
}

func failedEvent(d *Decoded, f failure, attempts int, now time.Time) *outEvent {
	id := terminalID(d)
	ev := &FailedEvent{Envelope: envelope(d, id, attempts, now), Class: f.class,
		UserMessage: f.userMessage, DeveloperMessage: f.developerMessage}
	if f.errorCode != 0 {
		ev.ErrorCode = &f.errorCode
	}
	if f.httpStatus != 0 {
		ev.HTTPStatus = &f.httpStatus
	}
	ev.Command, ev.CommandEncoding = originalCommand(d.Raw)
	return &outEvent{subject: SubjectFailed + "." + string(f.class), ceType: TypeFailed, msgID: id, eventID: eventID(id), body: ev}
}

func waitingEvent(d *Decoded, deadline, next time.Time, attempts int, now time.Time) *outEvent {
	id := waitingMsgID(d.ID)
	return &outEvent{subject: SubjectWaiting, ceType: TypeWaiting, msgID: id, eventID: eventID(id),
		body: &WaitingEvent{Envelope: envelope(d, id, attempts, now), Deadline: deadline.UTC(), NextAttemptAt: next.UTC()}}
}

// originalCommand keeps the command exactly as received: as JSON when it is JSON,
// as a string when it is text, as Base64 when it is neither.
func originalCommand(raw []byte) (json.RawMessage, string) {
	if json.Valid(raw) {
		return json.RawMessage(raw), ""
	}
	if utf8.Valid(raw) {
		s, _ := json.Marshal(string(raw))
		return s, ""
	}
	s, _ := json.Marshal(base64.StdEncoding.EncodeToString(raw))
	return s, "base64"
}

// natsMsg builds the message with CloudEvents headers (NATS binding).
func (e *outEvent) natsMsg(source string, traceparent string, now time.Time) (*nats.Msg, error) {
	body, err := marshalEvent(e.body)
	if err != nil {
		return nil, err
	}
	m := nats.NewMsg(e.subject)
	m.Data = body
	m.Header.Set("ce-specversion", "1.0")
	m.Header.Set("ce-id", e.eventID)
	m.Header.Set("ce-type", e.ceType)
	m.Header.Set("ce-source", source)
	m.Header.Set("ce-time", now.UTC().Format(time.RFC3339Nano))
	m.Header.Set("Content-Type", "application/json")
	if traceparent != "" {
		m.Header.Set("traceparent", traceparent)
	}
	m.Header.Set(nats.MsgIdHdr, e.msgID)
	return m, nil
}

// marshalEvent encodes an event. A failed event's command is spliced in byte for
// byte: encoding/json would compact it, and replays need it exactly as received.
func marshalEvent(v any) ([]byte, error) {
	if rb, ok := v.(rawBody); ok {
		return rb, nil
	}
	f, ok := v.(*FailedEvent)
	if !ok {
		b, err := json.Marshal(v)
		if err != nil {
			return nil, fmt.Errorf("encode event: %w", err)
		}
		return b, nil
	}
	cp := *f
	cp.Command = json.RawMessage("null")
	b, err := json.Marshal(&cp)
	if err != nil {
		return nil, fmt.Errorf("encode event: %w", err)
	}
	const placeholder = `"command":null`
	i := bytes.LastIndex(b, []byte(placeholder))
	if i < 0 {
		return nil, fmt.Errorf("encode event: no command field")
	}
	out := make([]byte, 0, len(b)+len(f.Command))
	out = append(out, b[:i+len(`"command":`)]...)
	out = append(out, f.Command...)
	out = append(out, b[i+len(placeholder):]...)
	return out, nil
}
