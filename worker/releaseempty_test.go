package worker_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/xygroup/xygroup/worker"
	wt "github.com/xygroup/xygroup/worker/workertest"
	"github.com/xygroup/xygroup/xylink/sandbox"
)

// A released meeting whose release consumer reports nothing pending and
// nothing awaiting an ack while the parked stream still holds the meeting's
// commands: what a clustered server answers for a consumer that has no leader
// yet (a replica answers with an empty state), for example one created while a
// node rejoins. The meeting is not taken for done on that word alone: its
// parked commands are let out and each ends with one terminal event, and the
// parked stream is left empty. Here the consumer that reports nothing is one
// in place before the meeting starts whose filter matches none of them.
func TestReleasedMeetingConsumerReportingNothingLetsOut(t *testing.T) {
	const meeting = "m-release-empty-word"
	srv := wt.StartNATS(t)
	sb := wt.StartSandbox(t, sandbox.Config{Rate: 1e6})
	c := wt.Client(t, sb)
	if _, err := sb.AddMeeting(sandbox.MeetingSpec{Number: meeting, StartsIn: sandbox.Duration(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	w := wt.StartWorker(t, srv, c, worker.WithConcurrency(8),
		worker.WithProbeBackoff(worker.Backoff{Initial: 100 * time.Millisecond, Max: 300 * time.Millisecond}))
	js := wt.JetStream(t, wt.Connect(t, srv))
	const n = 3
	for i := range n {
		id := fmt.Sprintf("rew-%d", i)
		wt.Publish(t, js, id, wt.Command(id, meeting))
	}
	parked := awaitParked(t, js, n)

	ctx := context.Background()
	first, err := parked.GetMsg(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	token := strings.TrimPrefix(first.Subject, "xygroup.parked.")
	if _, err := js.CreateConsumer(ctx, worker.StreamParked, jetstream.ConsumerConfig{
		Durable:       "xygroup-release-" + token,
		FilterSubject: first.Subject + ".none",
		AckPolicy:     jetstream.AckExplicitPolicy,
	}); err != nil {
		t.Fatal(err)
	}

	sb.StartMeeting(meeting)
	events := wt.AwaitTerminal(t, js, n, time.Minute)
	for i := range n {
		id := fmt.Sprintf("rew-%d", i)
		var terminal []wt.Event
		for _, e := range events[id] {
			if e.Terminal() {
				terminal = append(terminal, e)
			}
		}
		if len(terminal) != 1 {
			t.Errorf("%s: %d terminal events", id, len(terminal))
			continue
		}
		// One of them created the groups; the others meet them open.
		if s := terminal[0].Subject; s != worker.SubjectCreated && s != worker.SubjectFailed+".already_open" {
			t.Errorf("%s ended on %s: %s", id, s, terminal[0].Data)
		}
	}
	awaitParked(t, js, 0)
	if err := w.Stop(); err != nil {
		t.Error(err)
	}
}
