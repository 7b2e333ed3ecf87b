package worker

import (
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/xygroup/xygroup/worker/contract"
)

// A command's deadline: its own, else the maximum wait from the later of its
// arrival and its notBefore; a replay's: the replay's deadline, else the
// maximum wait from the later of the replay's arrival and the notBefore.
func TestDeadlineCountsFromNotBefore(t *testing.T) {
	const maxWait = 2 * time.Hour
	received := time.Date(2026, 12, 6, 10, 0, 0, 0, time.UTC)
	ahead, passed, own, replayDeadline := received.Add(24*time.Hour), received.Add(-time.Hour), received.Add(time.Hour), received.Add(30*time.Minute)
	p := &pipeline{maxWait: maxWait, decoder: &decoder{maxHorizon: DefaultMaxHorizon}}
	for _, tc := range []struct {
		name      string
		notBefore *time.Time
		deadline  *time.Time
		replay    bool
		header    string
		want      time.Time
	}{
		{name: "plain", want: received.Add(maxWait)},
		{name: "notBefore ahead", notBefore: &ahead, want: ahead.Add(maxWait)},
		{name: "notBefore passed", notBefore: &passed, want: received.Add(maxWait)},
		{name: "own deadline", notBefore: &ahead, deadline: &own, want: own},
		{name: "replay, notBefore ahead", notBefore: &ahead, deadline: &own, replay: true, want: ahead.Add(maxWait)},
		{name: "replay, notBefore passed", notBefore: &passed, replay: true, want: received.Add(maxWait)},
		{name: "replay with its deadline", notBefore: &ahead, replay: true, header: replayDeadline.Format(time.RFC3339Nano), want: replayDeadline},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := &Decoded{Cmd: &Command{NotBefore: tc.notBefore, Deadline: tc.deadline}}
			del := &delivery{received: received, header: nats.Header{}}
			if tc.replay {
				d.ReplayID = "r1"
			}
			if tc.header != "" {
				del.header.Set(contract.HeaderReplayDeadline, tc.header)
			}
			if got := p.deadlineOf(d, del); !got.Equal(tc.want) {
				t.Errorf("deadline %s, want %s", got, tc.want)
			}
		})
	}
}
