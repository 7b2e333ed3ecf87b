package worker

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go"

	"github.com/xygroup/xygroup/schemas"
	"github.com/xygroup/xygroup/worker/contract"
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
	// MeetingRoomNumber is the command's meeting; for an invalid command, what
	// could be read of it.
	MeetingRoomNumber string
	Invalid           *Invalid
	// ReplayID is set when an operator replayed the command: its terminal event
	// then has a Nats-Msg-Id of its own.
	ReplayID string
	// namedByReplay: ID is the replay's HeaderReplayCommandID, which counts
	// only where the replay mark does (delivery.replayMark).
	namedByReplay bool
}

// Invalid says why a command cannot be sent.
type Invalid struct {
	UserMessage      string
	DeveloperMessage string
	// BeyondHorizon: the command is valid but for its notBefore or deadline,
	// beyond the horizon; one accepted before is not refused for it.
	BeyondHorizon bool
}

// decoder turns raw messages into commands.
type decoder struct {
	defaultEnterprise string
	hasTenant         func(string) bool
	// maxHorizon bounds notBefore and deadline, from when the command was
	// received (0: unbounded).
	maxHorizon time.Duration
}

// DefaultMaxHorizon is how far ahead of its arrival a command's notBefore and
// deadline may be, unless configured (WithMaxHorizon).
const DefaultMaxHorizon = 72 * time.Hour

// decode never fails: what cannot be read becomes an Invalid with its reason.
// horizonFrom is when a command at its first intake arrived, from which the
// horizon is counted; zero for any other reading (a parked copy, a retry, a
// scan), which the horizon does not apply to: a command accepted once is never
// refused later by a horizon lowered since (see intakeHorizon).
func (d *decoder) decode(raw []byte, hdr nats.Header, stream string, seq uint64, horizonFrom time.Time) *Decoded {
	out := &Decoded{Raw: raw}
	out.ID, out.namedByReplay = fallbackID(hdr, stream, seq)
	invalid := func(user, dev string) *Decoded {
		out.Invalid = &Invalid{UserMessage: user, DeveloperMessage: dev}
		// Best effort: name the command, its meeting and its enterprise in the
		// event whatever else is wrong, so that consumers filtering on them see it.
		f := peekFields(raw)
		if f.commandID != "" {
			out.ID, out.namedByReplay = f.commandID, false
		}
		out.MeetingRoomNumber, out.EnterpriseID = f.meetingRoomNumber, f.enterpriseID
		if out.EnterpriseID == "" {
			out.EnterpriseID = d.defaultEnterprise
		}
		return out
	}
	if len(raw) > MaxCommandBytes {
		return invalid("the command is too large", fmt.Sprintf("%d bytes, more than %d", len(raw), MaxCommandBytes))
	}
	if !utf8.Valid(raw) {
		return invalid("the command is not valid UTF-8", "the payload holds bytes that are not UTF-8")
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
	if d.maxHorizon > 0 && !horizonFrom.IsZero() {
		// A command parked for years would hold a share of the parked stream
		// that long: beyond the horizon it is refused, never parked.
		limit := horizonFrom.Add(d.maxHorizon)
		for _, f := range []struct {
			name string
			t    *time.Time
		}{{"notBefore", cmd.NotBefore}, {"deadline", cmd.Deadline}} {
			if f.t != nil && f.t.After(limit) {
				beyond := invalid(fmt.Sprintf("%s is too far ahead: at most %s after the command arrives", f.name, d.maxHorizon),
					fmt.Sprintf("%s %s is after %s, %s after the command was received (--max-horizon, XYGROUP_MAX_HORIZON)",
						f.name, f.t.UTC().Format(time.RFC3339), limit.UTC().Format(time.RFC3339), d.maxHorizon))
				beyond.Invalid.BeyondHorizon = true
				return beyond
			}
		}
	}
	out.Cmd = &cmd
	if cmd.CommandID != "" && len(cmd.CommandID) <= maxIDBytes {
		out.ID, out.namedByReplay = cmd.CommandID, false
	}
	out.MeetingRoomNumber = cmd.MeetingRoomNumber
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

// maxIDBytes bounds a command's id, as the schema bounds commandId: the id is
// repeated in its events' bodies and headers, which must fit NATS's payload limit.
const maxIDBytes = 200

// fallbackID names a command that does not name itself: a replay's copy by
// the id the replay gives it (the original's, which the replay waits for),
// else by its Nats-Msg-Id, else by its place in its stream. byReplay says the
// replay named it.
func fallbackID(hdr nats.Header, stream string, seq uint64) (id string, byReplay bool) {
	if hdr.Get(HeaderReplay) != "" {
		if id := hdr.Get(contract.HeaderReplayCommandID); id != "" {
			return boundedID(id), true
		}
	}
	if id := hdr.Get(nats.MsgIdHdr); id != "" {
		return boundedID(id), false
	}
	return stream + ":" + strconv.FormatUint(seq, 10), false
}

// boundedID is id, or when it is longer than maxIDBytes a name derived from it
// ("sha256:" and its hash), the same for every delivery of the command.
func boundedID(id string) string {
	if len(id) <= maxIDBytes {
		return id
	}
	h := sha256.Sum256([]byte(id))
	return "sha256:" + hex.EncodeToString(h[:])
}

func jsonSyntaxError(raw []byte) string {
	var v any
	err := json.Unmarshal(raw, &v)
	if err == nil {
		return "trailing data after the JSON value"
	}
	return err.Error()
}

// maxPeekedBytes bounds a field read from an invalid command for its event: far
// above any valid value (the schema allows 200 bytes at most), so a value cut
// to it cannot be mistaken for a valid one.
const maxPeekedBytes = 256

// peeked are the fields an event names, as read from a command that may be invalid.
type peeked struct{ commandID, enterpriseID, meetingRoomNumber string }

// peekFields reads the first JSON value of raw leniently (whatever follows it,
// bytes that are not UTF-8, fields of the wrong type or unknown) and, when it is
// an object, takes each of the fields that is a string or a number (as its text).
// A commandId is taken only as the command would be (1 to 200 bytes); the other
// fields are cut to maxPeekedBytes.
func peekFields(raw []byte) peeked {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var m map[string]any
	if dec.Decode(&m) != nil {
		// Raw control characters inside strings are the commonest way a
		// command fails to be JSON: read it again with them escaped.
		dec = json.NewDecoder(bytes.NewReader(escapeControlsInStrings(raw)))
		dec.UseNumber()
		if m = nil; dec.Decode(&m) != nil {
			return peeked{}
		}
	}
	text := func(key string) string {
		switch v := m[key].(type) {
		case string:
			return v
		case json.Number:
			return v.String()
		}
		return ""
	}
	var p peeked
	if id := text("commandId"); len(id) <= maxIDBytes {
		p.commandID = id
	}
	p.enterpriseID = cutUTF8(text("enterpriseId"), maxPeekedBytes)
	p.meetingRoomNumber = cutUTF8(text("meetingRoomNumber"), maxPeekedBytes)
	return p
}

// escapeControlsInStrings returns raw with every control byte inside a JSON
// string written as a \u escape, leaving everything else as it is.
func escapeControlsInStrings(raw []byte) []byte {
	out := make([]byte, 0, len(raw)+64)
	inString, escaped := false, false
	for _, b := range raw {
		switch {
		case !inString:
			inString = b == '"'
		case escaped:
			escaped = false
		case b == '\\':
			escaped = true
		case b == '"':
			inString = false
		case b < 0x20:
			out = fmt.Appendf(out, `\u%04x`, b)
			continue
		}
		out = append(out, b)
	}
	return out
}

// cutUTF8 cuts s to at most n bytes without splitting a character.
func cutUTF8(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}
