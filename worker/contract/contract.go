// Package contract holds what publishers, the worker and the tools agree on:
// the names of subjects, streams, consumers and headers, the fields of commands
// and events that readers use, and one reader of the streams.
//
// It imports nothing of this project, so that a program that only publishes
// commands or reads events does not build the worker (its metrics and circuit
// breaker) into itself. A change to any name here is a breaking change for
// every publisher and consumer.
package contract

import (
	"encoding/json"
	"strings"
	"time"
)

// Subjects, streams and the workers' shared consumer.
const (
	SubjectCreate = "xylink.groups.create"
	// SubjectReplay: replays only, the one subject on which HeaderReplay counts.
	SubjectReplay  = "xylink.groups.replay"
	SubjectCreated = "xylink.groups.created"
	// SubjectFailed is the prefix of the failed events' subjects: SubjectFailed
	// + "." + class.
	SubjectFailed   = "xylink.groups.failed"
	SubjectWaiting  = "xylink.groups.waiting"
	StreamCommands  = "XYLINK_GROUP_COMMANDS"
	StreamEvents    = "XYLINK_GROUP_EVENTS"
	ConsumerWorkers = "xygroup-workers"
)

// BucketReplicas holds a heartbeat per running worker replica (JSON; its
// "defaultEnterprise" is the tenant of the commands that name none).
const BucketReplicas = "xygroup-replicas"

// SubjectFailedAll matches the failed events of every class.
const SubjectFailedAll = SubjectFailed + ".>"

// CloudEvents types of the events.
const (
	TypeCreated = "com.xylink.groups.created"
	TypeFailed  = "com.xylink.groups.failed"
	TypeWaiting = "com.xylink.groups.waiting"
)

// HeaderReplay marks a command re-published by `xygroup replay`: it yields to
// live commands, and a failed one is tried again once per replay. It counts
// only on SubjectReplay.
const HeaderReplay = "Xygroup-Replay"

// HeaderReplayDeadline is a replay's deadline for the commands it re-publishes
// (RFC 3339). A replayed command's own deadline has passed, often: the replay
// gives it a fresh one, this, or its arrival plus the worker's maximum wait
// when the replay names none. It counts only with HeaderReplay.
const HeaderReplayDeadline = "Xygroup-Replay-Deadline"

// HeaderReplayCommandID is the id of the command a replay re-publishes, as its
// events named it. It names the replay's copy when the command cannot name
// itself (it is not a JSON object, so it has no commandId), in place of the
// replay's own Nats-Msg-Id, so that the replay's outcome carries the id the
// replay waits for. It counts only with HeaderReplay.
const HeaderReplayCommandID = "Xygroup-Replay-Command-Id"

// Identity is what names a command and every event of it: the fields readers
// match and filter on, in commands and events alike. A field of another type
// stays empty when decoded.
type Identity struct {
	CommandID         string `json:"commandId"`
	EnterpriseID      string `json:"enterpriseId"`
	MeetingRoomNumber string `json:"meetingRoomNumber"`
}

// Envelope is what every event carries.
type Envelope struct {
	EventID           string    `json:"eventId"`
	CommandID         string    `json:"commandId"`
	EnterpriseID      string    `json:"enterpriseId"`
	MeetingRoomNumber string    `json:"meetingRoomNumber"`
	Attempts          int       `json:"attempts"`
	OccurredAt        time.Time `json:"occurredAt"`
}

// Identity of the event's command.
func (e Envelope) Identity() Identity {
	return Identity{CommandID: e.CommandID, EnterpriseID: e.EnterpriseID, MeetingRoomNumber: e.MeetingRoomNumber}
}

// Event is an event as readers decode it, whichever its kind: the envelope and
// the fields of each kind that readers use. The worker publishes its own,
// stricter types; the fields of the other kinds stay empty.
type Event struct {
	Envelope

	// Created events.
	Groups         []json.RawMessage `json:"groups,omitempty"`
	Reconciled     bool              `json:"reconciled,omitempty"`
	MembersOmitted bool              `json:"membersOmitted,omitempty"`

	// Failed events.
	Class            string `json:"class,omitempty"`
	ErrorCode        int    `json:"errorCode,omitempty"`
	HTTPStatus       int    `json:"httpStatus,omitempty"`
	UserMessage      string `json:"userMessage,omitempty"`
	DeveloperMessage string `json:"developerMessage,omitempty"`
	// Command is the command as received, encoded as CommandEncoding says
	// ("base64", or "" for JSON or a JSON string); when CommandTruncated it is
	// only its first bytes.
	Command          json.RawMessage `json:"command,omitempty"`
	CommandEncoding  string          `json:"commandEncoding,omitempty"`
	CommandTruncated bool            `json:"commandTruncated,omitempty"`
	CommandSHA256    string          `json:"commandSha256,omitempty"`

	// Cancelled failures and cancel_rejected answers.
	Reason       string `json:"reason,omitempty"`
	CancelID     string `json:"cancelId,omitempty"`
	CancelReason string `json:"cancelReason,omitempty"`
	Outcome      string `json:"outcome,omitempty"`

	// Waiting events.
	Deadline      time.Time `json:"deadline,omitzero"`
	NextAttemptAt time.Time `json:"nextAttemptAt,omitzero"`
}

// IsFailed reports whether subject is a failed event's.
func IsFailed(subject string) bool {
	return strings.HasPrefix(subject, SubjectFailed+".")
}

// IsTerminal reports whether subject is a terminal event's: created or failed.
func IsTerminal(subject string) bool { return subject == SubjectCreated || IsFailed(subject) }
