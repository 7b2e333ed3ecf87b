package worker

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go"

	"github.com/xygroup/xygroup/schemas"
	"github.com/xygroup/xygroup/xylink"
)

// MaxCommandBytes bounds a command; larger ones fail as invalid_command.
const MaxCommandBytes = 256 << 10

// Command is what scheduling systems publish on xylink.groups.create: the API's
// body plus the fields that stay with the worker.
type Command struct {
	CommandID    string `json:"commandId,omitempty"`
	EnterpriseID string `json:"enterpriseId,omitempty"`
	xylink.CreateGroupsRequest
	NotBefore *time.Time `json:"notBefore,omitempty"`
	Deadline  *time.Time `json:"deadline,omitempty"`
}

// Decoded is a message read as a command. Exactly one of Cmd and Invalid is set.
type Decoded struct {
	// ID is the command's idempotency key: commandId, else the Nats-Msg-Id
	// header, else <stream>:<sequence>.
	ID  string
	Raw []byte
	Cmd *Command
	// EnterpriseID is the tenant (the command's, else the default).
	EnterpriseID string
	Invalid      *Invalid
	// ReplayID is set when an operator replayed the command: its terminal event
	// then has a Nats-Msg-Id of its own.
	ReplayID string
}

// Invalid says why a command cannot be sent.
type Invalid struct {
	UserMessage      string
	DeveloperMessage string
}

// decoder turns raw messages into commands.
type decoder struct {
	defaultEnterprise string
	hasTenant         func(string) bool
}

// decode never fails: what cannot be read becomes an Invalid with its reason.
func (d *decoder) decode(raw []byte, hdr nats.Header, stream string, seq uint64) *Decoded {
	out := &Decoded{Raw: raw}
	out.ID = fallbackID(hdr, stream, seq)
	invalid := func(user, dev string) *Decoded {
		out.Invalid = &Invalid{UserMessage: user, DeveloperMessage: dev}
		return out
	}
	if len(raw) > MaxCommandBytes {
		return invalid("the command is too large", fmt.Sprintf("%d bytes, more than %d", len(raw), MaxCommandBytes))
	}
	if !utf8.Valid(raw) {
		return invalid("the command is not valid UTF-8", "the payload holds bytes that are not UTF-8")
	}
	// Best effort: name the command and its meeting in the event even when it is invalid.
	var peek struct {
		CommandID         any `json:"commandId"`
		EnterpriseID      any `json:"enterpriseId"`
		MeetingRoomNumber any `json:"meetingRoomNumber"`
	}
	if json.Unmarshal(raw, &peek) == nil {
		if s, ok := peek.CommandID.(string); ok && s != "" && len(s) <= 200 {
			out.ID = s
		}
		if s, ok := peek.EnterpriseID.(string); ok {
			out.EnterpriseID = s
		}
	}
	if !json.Valid(raw) {
		return invalid("the command is not valid JSON", "not JSON: "+jsonSyntaxError(raw))
	}
	if err := schemas.Validate(schemas.Command, raw); err != nil {
		return invalid("the command does not match the command schema", err.Error())
	}
	var cmd Command
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&cmd); err != nil {
		return invalid("the command does not match the command schema", err.Error())
	}
	if err := cmd.CreateGroupsRequest.Validate(); err != nil {
		return invalid("the command breaks a rule of the XYLink API", err.Error())
	}
	if cmd.NotBefore != nil && cmd.Deadline != nil && cmd.Deadline.Before(*cmd.NotBefore) {
		return invalid("the deadline is before notBefore", "deadline must not be before notBefore")
	}
	out.Cmd = &cmd
	out.EnterpriseID = cmd.EnterpriseID
	if out.EnterpriseID == "" {
		out.EnterpriseID = d.defaultEnterprise
	}
	switch {
	case out.EnterpriseID == "":
		return invalid("the command names no enterprise", "no enterpriseId in the command and no default XYLINK_ENTERPRISE_ID")
	case d.hasTenant != nil && !d.hasTenant(out.EnterpriseID):
		return invalid("unknown enterprise", fmt.Sprintf("no credentials are configured for enterprise %q", out.EnterpriseID))
	}
	return out
}

func fallbackID(hdr nats.Header, stream string, seq uint64) string {
	if id := hdr.Get(nats.MsgIdHdr); id != "" {
		return id
	}
	return stream + ":" + strconv.FormatUint(seq, 10)
}

func jsonSyntaxError(raw []byte) string {
	var v any
	err := json.Unmarshal(raw, &v)
	if err == nil {
		return "trailing data after the JSON value"
	}
	return err.Error()
}
