package worker

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go"

	"github.com/xygroup/xygroup/worker/contract"
	"github.com/xygroup/xygroup/worker/record"
	"github.com/xygroup/xygroup/xylink"
)

// Subjects, streams and CloudEvents types of the contract (package contract),
// under the names the worker has always exported.
const (
	SubjectCreate   = contract.SubjectCreate
	SubjectReplay   = contract.SubjectReplay // replays only: the one subject on which HeaderReplay counts
	SubjectCreated  = contract.SubjectCreated
	SubjectFailed   = contract.SubjectFailed // + "." + class
	SubjectWaiting  = contract.SubjectWaiting
	StreamCommands  = contract.StreamCommands
	StreamEvents    = contract.StreamEvents
	ConsumerWorkers = contract.ConsumerWorkers

	TypeCreated = contract.TypeCreated
	TypeFailed  = contract.TypeFailed
	TypeWaiting = contract.TypeWaiting
)

// Envelope is what every event carries.
type Envelope = contract.Envelope

// CreatedEvent: the groups were created.
type CreatedEvent struct {
	Envelope
	Groups     []xylink.Group `json:"groups"`
	Reconciled bool           `json:"reconciled,omitempty"`
	// MembersOmitted: the answer was too large for one event, so the groups are
	// given without their members.
	MembersOmitted bool `json:"membersOmitted,omitempty"`
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
	// CommandTruncated: the command was too large for the event, even in Base64;
	// command holds its first bytes in Base64, and CommandSHA256 identifies it.
	CommandTruncated bool   `json:"commandTruncated,omitempty"`
	CommandSHA256    string `json:"commandSha256,omitempty"`
	// Reason and CancelID: a cancelled command's cancel (class cancelled).
	Reason   string `json:"reason,omitempty"`
	CancelID string `json:"cancelId,omitempty"`

	raw []byte // the command as received, to cut when the event is too large
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
// It names the tenant, so two enterprises' commands with one commandId do not
// take each other's event for a duplicate.
func terminalMsgID(r commandRef) string { return "xygroup.terminal." + scopedID(r) }

// scopedID is <enterpriseId>.<commandId> when the enterpriseId is a plain token
// (it cannot hold a dot then), else sha256:<hex of enterpriseId>.<commandId>.
func scopedID(r commandRef) string {
	if record.Token(r.enterprise) {
		return r.enterprise + "." + r.id
	}
	h := sha256.Sum256([]byte(r.enterprise))
	return "sha256:" + hex.EncodeToString(h[:]) + "." + r.id
}

// terminalID is the terminal Nats-Msg-Id of this handling: a replay's terminal
// event is its own (the command's failure is already in the stream).
func terminalID(d *Decoded) string {
	if d.ReplayID != "" {
		return terminalMsgID(d.ref()) + ".replay." + boundedID(d.ReplayID)
	}
	return terminalMsgID(d.ref())
}
func waitingMsgID(r commandRef) string { return "xygroup.waiting." + scopedID(r) }

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
		UserMessage: cutJSONString(f.userMessage, maxMessageBytes), DeveloperMessage: cutJSONString(f.developerMessage, maxMessageBytes)}
	if f.errorCode != 0 {
		ev.ErrorCode = &f.errorCode
	}
	if f.httpStatus != 0 {
		ev.HTTPStatus = &f.httpStatus
	}
	ev.Command, ev.CommandEncoding = originalCommand(d.Raw)
	ev.raw = d.Raw
	return &outEvent{subject: SubjectFailed + "." + string(f.class), ceType: TypeFailed, msgID: id, eventID: eventID(id), body: ev}
}

func waitingEvent(d *Decoded, deadline, next time.Time, attempts int, now time.Time) *outEvent {
	id := waitingMsgID(d.ref())
	return &outEvent{subject: SubjectWaiting, ceType: TypeWaiting, msgID: id, eventID: eventID(id),
		body: &WaitingEvent{Envelope: envelope(d, id, attempts, now), Deadline: deadline.UTC(), NextAttemptAt: next.UTC()}}
}

// originalCommand keeps the command exactly as received: as JSON when it is JSON,
// as a string when it is text, as Base64 when it is neither, or when Base64 is
// shorter (text full of characters that JSON escapes: U+0001 becomes \u0001, <
// becomes \u003c).
func originalCommand(raw []byte) (json.RawMessage, string) {
	b64 := quotedBase64(raw)
	var natural []byte
	switch {
	case json.Valid(raw):
		natural = raw
	case utf8.Valid(raw):
		natural, _ = json.Marshal(string(raw))
	default:
		return b64, "base64"
	}
	if storedLen(natural) > len(b64) {
		return b64, "base64"
	}
	return natural, ""
}

func quotedBase64(b []byte) []byte {
	out := make([]byte, 0, base64.StdEncoding.EncodedLen(len(b))+2)
	out = append(out, '"')
	out = base64.StdEncoding.AppendEncode(out, b)
	return append(out, '"')
}

// Bounds of what an event carries, so that every event fits NATS's payload limit.
const (
	// maxMessageBytes bounds userMessage and developerMessage, as JSON: an API
	// answer or a schema error quoting the command could be as large as it.
	maxMessageBytes = 4 << 10
	// maxTraceparentBytes: a longer traceparent header is not carried over.
	maxTraceparentBytes = 256
	// recordReserve is kept free beside the event for the headers of the
	// idempotency record's write and its other fields (the record holds the event).
	recordReserve = 16 << 10
)

// storedLen is the length of a JSON document once stored again by encoding/json
// (as the idempotency record stores the event): <, > and & become \u003c,
// \u003e and \u0026, U+2028 and U+2029 \u2028 and \u2029. It is never less
// than len(doc).
func storedLen(doc []byte) int {
	n := len(doc)
	for i := 0; i < len(doc); i++ {
		switch doc[i] {
		case '<', '>', '&':
			n += 5
		case 0xE2:
			if i+2 < len(doc) && doc[i+1] == 0x80 && (doc[i+2] == 0xA8 || doc[i+2] == 0xA9) {
				n += 3
			}
		}
	}
	return n
}

// cutJSONString cuts s, at a character boundary, so that it takes at most limit
// bytes as a JSON string (escapes counted), and says so at its end.
func cutJSONString(s string, limit int) string {
	const more = " …(cut)"
	size, cut := 2, -1
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		w := n
		switch {
		case r == utf8.RuneError && n == 1, r == '<', r == '>', r == '&', r < 0x20, r == '\u2028', r == '\u2029':
			w = 6 // \ufffd for a byte that is not UTF-8, \u003c, …
		case r == '"', r == '\\':
			w = 2
		}
		if cut < 0 && size+w > limit-len(more) {
			cut = i
		}
		size += w
		if size > limit {
			return s[:cut] + more
		}
		i += n
	}
	return s
}

// fit returns the event's body, at most limit bytes as stored (storedLen). A
// failed event's command is cut to fit, keeping its SHA-256; a created event
// loses its groups' members. With limit ≤ 0 the event takes its smallest form.
func (e *outEvent) fit(limit int) ([]byte, error) {
	body, err := marshalEvent(e.body)
	if err != nil || storedLen(body) <= limit {
		return body, err
	}
	switch b := e.body.(type) {
	case rawBody:
		// Published earlier under a larger limit: shape it again.
		var v any
		switch {
		case e.subject == SubjectCreated:
			v = &CreatedEvent{}
		case e.subject != SubjectWaiting:
			v = &FailedEvent{}
		default:
			return nil, fmt.Errorf("event of %d bytes, more than %d", len(body), limit)
		}
		if err := json.Unmarshal(b, v); err != nil {
			return nil, fmt.Errorf("event of %d bytes, more than %d: %w", len(body), limit, err)
		}
		if f, ok := v.(*FailedEvent); ok {
			f.raw = f.original()
		}
		again := *e
		again.body = v
		return again.fit(limit)
	case *FailedEvent:
		cut := b.withoutCommand()
		rest, err := marshalEvent(&cut)
		if err != nil {
			return nil, err
		}
		room := limit - storedLen(rest)
		n := min(max(room/4*3, 0), len(b.raw))
		cut.Command = quotedBase64(b.raw[:n])
		return marshalEvent(&cut)
	case *CreatedEvent:
		slim := *b
		slim.MembersOmitted = true
		slim.Groups = make([]xylink.Group, len(b.Groups))
		for i, g := range b.Groups {
			slim.Groups[i] = xylink.Group{GroupNo: g.GroupNo, GroupName: g.GroupName, MemberList: []xylink.Member{}}
		}
		body, err := marshalEvent(&slim)
		if err == nil && limit > 0 && storedLen(body) > limit {
			err = fmt.Errorf("created event of %d bytes without its members, more than %d", len(body), limit)
		}
		return body, err
	}
	if limit <= 0 {
		return body, nil
	}
	return nil, fmt.Errorf("event of %d bytes, more than %d", len(body), limit)
}

// original is the command as received, from the event's command field.
// withoutCommand is the event with its command cut to nothing, still a valid
// failed event: commandTruncated, and commandSha256 naming the whole command.
func (f *FailedEvent) withoutCommand() FailedEvent {
	cut := *f
	if !f.CommandTruncated { // else raw is already a prefix, and the hash the whole command's
		sum := sha256.Sum256(f.raw)
		cut.CommandSHA256 = hex.EncodeToString(sum[:])
	}
	cut.Command, cut.CommandEncoding, cut.CommandTruncated = json.RawMessage(`""`), "base64", true
	return cut
}

func (f *FailedEvent) original() []byte {
	if len(f.Command) == 0 || f.Command[0] != '"' {
		return f.Command
	}
	var s string
	if json.Unmarshal(f.Command, &s) != nil {
		return nil
	}
	if f.CommandEncoding == "base64" {
		b, _ := base64.StdEncoding.DecodeString(s)
		return b
	}
	return []byte(s)
}

// natsMsg builds the message with CloudEvents headers (NATS binding), at most
// maxPayload bytes with its headers, leaving room for the idempotency record
// (maxPayload ≤ 0: the event's smallest form).
func (e *outEvent) natsMsg(source string, traceparent string, now time.Time, maxPayload int) (*nats.Msg, error) {
	m := nats.NewMsg(e.subject)
	m.Header.Set("ce-specversion", "1.0")
	m.Header.Set("ce-id", e.eventID)
	m.Header.Set("ce-type", e.ceType)
	m.Header.Set("ce-source", source)
	m.Header.Set("ce-time", now.UTC().Format(time.RFC3339Nano))
	m.Header.Set("Content-Type", "application/json")
	if traceparent != "" && len(traceparent) <= maxTraceparentBytes {
		m.Header.Set("traceparent", traceparent)
	}
	m.Header.Set(nats.MsgIdHdr, e.msgID)
	limit := 0
	if maxPayload > 0 {
		limit = max(maxPayload-headerLen(m.Header)-min(recordReserve, maxPayload/8), 1)
	}
	body, err := e.fit(limit)
	if err != nil {
		return nil, err
	}
	m.Data = body
	return m, nil
}

// headerLen is the size of the headers on the wire.
func headerLen(h nats.Header) int {
	n := len("NATS/1.0\r\n\r\n")
	for k, vs := range h {
		for _, v := range vs {
			n += len(k) + len(": \r\n") + len(v)
		}
	}
	return n
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
