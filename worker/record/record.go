// Package record reads the workers' idempotency records: one per command of a
// tenant, in the Bucket key-value bucket, holding how many calls were made and
// the command's terminal event once there is one.
//
// Package worker writes the records; tools (publish --wait, replay) read them
// through Lookup. The key scheme lives here so that both use one. Like package
// contract it imports nothing of this project, so that a publisher does not
// build the worker into itself.
package record

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strconv"

	"github.com/nats-io/nats.go/jetstream"
)

// Bucket holds one record per command of a tenant. It outlives the commands
// stream (30 days by default), so a command published again long after it
// completed is still recognised.
const Bucket = "xygroup-commands"

var token = regexp.MustCompile(`^[-/_=a-zA-Z0-9]{1,200}$`)

// Token reports whether s may stand as it is in a key or a Nats-Msg-Id: no
// dot, nothing a key may not hold, at most 200 bytes.
func Token(s string) bool { return token.MatchString(s) }

// Key is a command's key: t.<enterpriseId>.<commandId> when both are tokens,
// else a hash of both (ids may hold characters that keys may not).
func Key(enterpriseID, commandID string) string {
	if Token(enterpriseID) && Token(commandID) {
		return "t." + enterpriseID + "." + commandID
	}
	// The enterprise's length first: either may hold any byte, NUL included,
	// so no separator alone tells where one ends.
	h := sha256.Sum256([]byte(strconv.Itoa(len(enterpriseID)) + ":" + enterpriseID + commandID))
	return "th." + hex.EncodeToString(h[:])
}

// LegacyKey is the key of records written before keys named the tenant.
func LegacyKey(commandID string) string {
	if Token(commandID) {
		return "c." + commandID
	}
	h := sha256.Sum256([]byte(commandID))
	return "h." + hex.EncodeToString(h[:])
}

// TerminalIsTenants reports whether a terminal event held by a record under a
// legacy key, which does not name the tenant, is this enterprise's.
func TerminalIsTenants(event json.RawMessage, enterpriseID string) bool {
	var ev struct {
		EnterpriseID string `json:"enterpriseId"`
	}
	return json.Unmarshal(event, &ev) == nil && ev.EnterpriseID == enterpriseID
}

// State is what a record says of a command, for tools.
type State struct {
	Known    bool
	Attempts int
	// Terminal: the subject of its terminal event ("" while it has none).
	Terminal string
	// Event is the terminal event's body, as published, except that a failed
	// event's command is left out of records written since EventSeq was
	// kept: it is given as cut to nothing ("command": "", commandTruncated),
	// with its commandSha256. The event as published is in the events
	// stream at EventSeq.
	Event json.RawMessage
	// EventSeq is the terminal event's sequence in the events stream
	// (XYLINK_GROUP_EVENTS); 0 when the record predates it or has no
	// terminal event.
	EventSeq uint64
	ReplayID string
}

// stored is the part of a record that tools read.
type stored struct {
	Attempts int    `json:"attempts"`
	ReplayID string `json:"replayId,omitempty"`
	EventSeq uint64 `json:"eventSeq,omitempty"`
	Terminal *struct {
		Subject string          `json:"subject"`
		Body    json.RawMessage `json:"body"`
	} `json:"terminal,omitempty"`
}

// Lookup reads the record of an enterprise's command (enterpriseID: the
// command's, else the workers' default tenant). Without a record under the
// tenant's key it reads the legacy key too, whether or not the workers found
// any at their start.
func Lookup(ctx context.Context, js jetstream.JetStream, enterpriseID, commandID string) (State, error) {
	kv, err := js.KeyValue(ctx, Bucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return State{}, nil
	}
	if err != nil {
		return State{}, err
	}
	var r stored
	e, err := kv.Get(ctx, Key(enterpriseID, commandID))
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		if r, err = legacy(ctx, kv, enterpriseID, commandID); err != nil || (r.Attempts == 0 && r.Terminal == nil) {
			return State{}, err
		}
	case err != nil:
		return State{}, fmt.Errorf("idempotency record: %w", err)
	default:
		if err := json.Unmarshal(e.Value(), &r); err != nil {
			return State{}, fmt.Errorf("idempotency record %s: %w", commandID, err)
		}
	}
	st := State{Known: true, Attempts: r.Attempts, ReplayID: r.ReplayID}
	if r.Terminal != nil {
		st.Terminal = r.Terminal.Subject
		st.Event, st.EventSeq = r.Terminal.Body, r.EventSeq
	}
	return st, nil
}

// legacy reads the record under the legacy key, as the workers carry it over:
// a terminal one only if its event is this tenant's, and an unreadable one as
// if there were none.
func legacy(ctx context.Context, kv jetstream.KeyValue, enterpriseID, commandID string) (stored, error) {
	e, err := kv.Get(ctx, LegacyKey(commandID))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return stored{}, nil
	}
	if err != nil {
		return stored{}, fmt.Errorf("idempotency record: %w", err)
	}
	var old stored
	if json.Unmarshal(e.Value(), &old) != nil {
		return stored{}, nil
	}
	if old.Terminal != nil && !TerminalIsTenants(old.Terminal.Body, enterpriseID) {
		return stored{}, nil
	}
	return old, nil
}
