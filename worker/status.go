package worker

import (
	"context"
	"fmt"
	"sort"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// ParkedMeeting is one waiting (or releasing) meeting, for `xygroup status`.
type ParkedMeeting struct {
	// Kind is "breaker" for a tenant's hold, "lane" for a tenant's lane, empty for a meeting.
	Kind         string    `json:"kind,omitempty"`
	EnterpriseID string    `json:"enterpriseId"`
	Meeting      string    `json:"meetingRoomNumber"`
	State        string    `json:"state"`
	Parked       uint64    `json:"parked"`
	Probes       int       `json:"probes"`
	NextProbeAt  time.Time `json:"nextProbeAt"`
	WaitingSince time.Time `json:"waitingSince"`
	// EarliestDeadline of its commands (at most: the probing replica corrects it).
	EarliestDeadline time.Time `json:"earliestDeadline,omitzero"`
}

// ParkedMeetings reads the meetings bucket and the parked stream: every meeting
// with parked commands, most parked first.
func ParkedMeetings(ctx context.Context, js jetstream.JetStream) ([]ParkedMeeting, error) {
	records, err := readBucket[meetingRecord](ctx, js, BucketMeetings)
	if err != nil || len(records) == 0 {
		return nil, err
	}
	s, err := js.Stream(ctx, StreamParked)
	if err != nil {
		return nil, fmt.Errorf("parked stream: %w", err)
	}
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(subjectParked+".>"))
	if err != nil {
		return nil, fmt.Errorf("parked stream: %w", err)
	}
	out := make([]ParkedMeeting, 0, len(records))
	for token, r := range records {
		out = append(out, ParkedMeeting{Kind: r.Kind, EnterpriseID: r.EnterpriseID, Meeting: r.Meeting, State: r.State,
			Parked: info.State.Subjects[parkedSubject(token)], Probes: r.Probes, NextProbeAt: r.NextProbeAt, WaitingSince: r.WaitingSince,
			EarliestDeadline: r.EarliestDeadline})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Parked > out[j].Parked })
	return out, nil
}
