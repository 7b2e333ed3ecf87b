// Package clusterstatus reads the state the replicas share (streams, consumer,
// buckets, the limiter's lease) into one snapshot: what `xygroup status` prints
// and the status page shows. Any replica, or any tool with read access, sees
// the same cluster.
package clusterstatus

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/xygroup/xygroup/worker"
	"github.com/xygroup/xygroup/worker/contract"
	"github.com/xygroup/xygroup/worker/ratelimit"
)

// Status is the cluster at one time (`xygroup status --json` prints it).
type Status struct {
	At      time.Time `json:"at"`
	Backlog uint64    `json:"backlog"`
	// Unacknowledged: commands delivered by the shared consumer and not yet
	// acknowledged: being handled by a replica, or waiting for a retry (a
	// delayed redelivery). InFlight is the same figure, under its earlier name.
	Unacknowledged int    `json:"unacknowledged"`
	InFlight       int    `json:"inFlight"`
	Redelivered    int    `json:"redelivered"`
	Commands       uint64 `json:"commandsStored"`
	Events         uint64 `json:"eventsStored"`
	// Cancelled and CancelRejected count the stored failed.cancelled events
	// and cancel_rejected answers (as long as the events stream keeps them).
	Cancelled      uint64                 `json:"cancelled"`
	CancelRejected uint64                 `json:"cancelRejected"`
	Parked         uint64                 `json:"parked"`
	Meetings       []worker.ParkedMeeting `json:"meetings"`
	Limiter        *ratelimit.LeaseInfo   `json:"limiter"`
	Breakers       []worker.BreakerState  `json:"breakers"`
	Replicas       []worker.Replica       `json:"replicas"`
}

// Collect reads the cluster's status.
func Collect(ctx context.Context, js jetstream.JetStream) (*Status, error) {
	st := &Status{At: time.Now().UTC()}
	c, err := js.Consumer(ctx, worker.StreamCommands, worker.ConsumerWorkers)
	if err != nil {
		return nil, fmt.Errorf("the shared consumer: %w (has a worker started?)", err)
	}
	ci, err := c.Info(ctx)
	if err != nil {
		return nil, err
	}
	st.Backlog, st.Unacknowledged, st.InFlight, st.Redelivered = ci.NumPending, ci.NumAckPending, ci.NumAckPending, ci.NumRedelivered
	for name, dst := range map[string]*uint64{worker.StreamCommands: &st.Commands, worker.StreamEvents: &st.Events, worker.StreamParked: &st.Parked} {
		if s, err := js.Stream(ctx, name); err == nil {
			*dst = s.CachedInfo().State.Msgs
		}
	}
	if s, err := js.Stream(ctx, worker.StreamEvents); err == nil {
		cancelled, rejected := contract.SubjectFailed+"."+contract.ClassCancelled, contract.SubjectCancelRejected
		for subject, dst := range map[string]*uint64{cancelled: &st.Cancelled, rejected: &st.CancelRejected} {
			if info, err := s.Info(ctx, jetstream.WithSubjectFilter(subject)); err == nil {
				*dst = info.State.Subjects[subject]
			}
		}
	}
	if st.Meetings, err = worker.ParkedMeetings(ctx, js); err != nil {
		return nil, err
	}
	if info, ok, err := ratelimit.Dispenser(ctx, js); err == nil && ok {
		st.Limiter = &info
	}
	if st.Breakers, err = worker.Breakers(ctx, js); err != nil {
		return nil, err
	}
	if st.Replicas, err = worker.Replicas(ctx, js); err != nil {
		return nil, err
	}
	return st, nil
}
