package clusterstatus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/xygroup/xygroup/worker/contract"
)

// Failure is one failed event.
type Failure struct {
	Class        string    `json:"class"`
	CommandID    string    `json:"commandId"`
	EnterpriseID string    `json:"enterpriseId"`
	Meeting      string    `json:"meetingRoomNumber"`
	At           time.Time `json:"at"`
	ErrorCode    int       `json:"errorCode,omitempty"`
	HTTPStatus   int       `json:"httpStatus,omitempty"`
	Message      string    `json:"message"`
	Seq          uint64    `json:"seq"`
}

// Failures are the failed events the events stream holds: how many of each
// class, and the most recent ones.
type Failures struct {
	ByClass map[string]uint64 `json:"byClass"`
	Recent  []Failure         `json:"recent"`
	// Searched is how many of the latest events were searched for Recent.
	Searched uint64 `json:"searched"`
}

// RecentFailures counts the stored failed events by class and returns the
// latest ones (at most limit, newest first) among the last window events.
func RecentFailures(ctx context.Context, js jetstream.JetStream, limit int, window uint64) (*Failures, error) {
	s, err := js.Stream(ctx, contract.StreamEvents)
	if err != nil {
		return nil, fmt.Errorf("events stream: %w", err)
	}
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(contract.SubjectFailedAll))
	if err != nil {
		return nil, fmt.Errorf("events stream: %w", err)
	}
	out := &Failures{ByClass: map[string]uint64{}}
	for subject, n := range info.State.Subjects {
		out.ByClass[strings.TrimPrefix(subject, contract.SubjectFailed+".")] = n
	}
	if limit <= 0 || len(out.ByClass) == 0 {
		return out, nil
	}
	out.Searched, err = scanBackward(ctx, s, info.State, window, func(m *jetstream.RawStreamMsg) bool {
		if !contract.IsFailed(m.Subject) {
			return false
		}
		var ev contract.Event
		if json.Unmarshal(m.Data, &ev) != nil {
			return false
		}
		f := Failure{Class: ev.Class, CommandID: ev.CommandID, EnterpriseID: ev.EnterpriseID, Meeting: ev.MeetingRoomNumber,
			At: ev.OccurredAt, ErrorCode: ev.ErrorCode, HTTPStatus: ev.HTTPStatus, Message: ev.DeveloperMessage, Seq: m.Sequence}
		if f.Class == "" {
			f.Class = strings.TrimPrefix(m.Subject, contract.SubjectFailed+".")
		}
		if f.Message == "" {
			f.Message = ev.UserMessage
		}
		out.Recent = append(out.Recent, f)
		return len(out.Recent) == limit
	})
	return out, err
}

// scanBytes bounds what one scan reads: events may be large (a failed event
// quotes its command).
const scanBytes = 4 << 20

// scanBackward reads the stream's messages from the last one back, at most
// window of them (and scanBytes), until f says stop, and returns how many it
// read. One
// message at a time (STREAM.MSG.GET), newest first: no consumer is made, so
// a reader needs no right to create one, and a page stops reading as soon as
// it has what it shows.
func scanBackward(ctx context.Context, s jetstream.Stream, st jetstream.StreamState, window uint64, f func(*jetstream.RawStreamMsg) bool) (uint64, error) {
	var read uint64
	bytes := 0
	for seq := st.LastSeq; seq >= max(st.FirstSeq, 1) && read < window && bytes < scanBytes; seq-- {
		m, err := s.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue // deleted, or gone with the stream's limits meanwhile
		}
		if err != nil {
			return read, fmt.Errorf("events stream: %w", err)
		}
		read++
		bytes += len(m.Data)
		if f(m) {
			break
		}
	}
	return read, nil
}
