package clusterstatus

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
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
// latest ones (at most limit) among the last window events of the stream.
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
	var recent []Failure
	out.Searched, err = scanLatest(ctx, js, info.State, window, []string{contract.SubjectFailedAll}, func(m contract.Msg) {
		var ev contract.Event
		if json.Unmarshal(m.Data(), &ev) != nil {
			return
		}
		f := Failure{Class: ev.Class, CommandID: ev.CommandID, EnterpriseID: ev.EnterpriseID, Meeting: ev.MeetingRoomNumber,
			At: ev.OccurredAt, ErrorCode: ev.ErrorCode, HTTPStatus: ev.HTTPStatus, Message: ev.DeveloperMessage}
		if f.Class == "" {
			f.Class = strings.TrimPrefix(m.Subject(), contract.SubjectFailed+".")
		}
		if f.Message == "" {
			f.Message = ev.UserMessage
		}
		if meta := m.Meta(); meta != nil {
			f.Seq = meta.Sequence.Stream
		}
		recent = append(recent, f)
		if len(recent) > 4*limit { // keep the latest, in bounded memory
			recent = append(recent[:0], recent[len(recent)-limit:]...)
		}
	})
	if err != nil {
		return nil, err
	}
	if len(recent) > limit {
		recent = recent[len(recent)-limit:]
	}
	sort.SliceStable(recent, func(i, j int) bool { return recent[i].Seq > recent[j].Seq })
	out.Recent = recent
	return out, nil
}

// scanLatest reads the messages among the stream's last window that match
// subjects, in order, and returns how many of the stream's sequences that
// window spans.
func scanLatest(ctx context.Context, js jetstream.JetStream, st jetstream.StreamState, window uint64, subjects []string, f func(contract.Msg)) (uint64, error) {
	if st.Msgs == 0 || st.LastSeq == 0 || window == 0 {
		return 0, nil
	}
	start := st.FirstSeq
	if st.LastSeq >= window && st.LastSeq-window+1 > start {
		start = st.LastSeq - window + 1
	}
	r, err := contract.NewReader(ctx, js, contract.ReadOptions{Subjects: subjects, StartSeq: start, Batch: 256, Wait: 200 * time.Millisecond})
	if err != nil {
		return 0, fmt.Errorf("events stream: %w", err)
	}
	for m, err := range r.Messages(ctx) {
		if err != nil {
			return 0, fmt.Errorf("events stream: %w", err)
		}
		f(m)
		if meta := m.Meta(); meta != nil && meta.Sequence.Stream >= st.LastSeq {
			break
		}
	}
	return st.LastSeq - start + 1, nil
}
