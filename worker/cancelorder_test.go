package worker_test

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/xygroup/xygroup/worker"
	"github.com/xygroup/xygroup/worker/commands"
	wt "github.com/xygroup/xygroup/worker/workertest"
	"github.com/xygroup/xygroup/xylink/sandbox"
)

// A cancel by meeting ends the meeting's commands published before it and
// never one published after it, even one already parked by the time the
// cancel is carried out (a new plan published right after the cancel, taken
// in by another replica first). The newer command's parked copy is written
// here as a worker parks it, with its place in the commands stream after
// the cancel's.
func TestCancelByMeetingSparesCommandsPublishedAfterIt(t *testing.T) {
	const meeting = "m-cancel-order"
	srv := wt.StartNATS(t)
	sb := wt.StartSandbox(t, sandbox.Config{Rate: 1e6})
	if _, err := sb.AddMeeting(sandbox.MeetingSpec{Number: meeting, StartsIn: sandbox.Duration(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	wt.StartWorker(t, srv, wt.Client(t, sb),
		worker.WithProbeBackoff(worker.Backoff{Initial: 200 * time.Millisecond, Max: 400 * time.Millisecond}))
	js := wt.JetStream(t, wt.Connect(t, srv))
	wt.Publish(t, js, "old-plan", wt.Command("old-plan", meeting))
	awaitParked(t, js, 1)

	// The new plan's command, parked as a worker parks it, published (by its
	// place in the commands stream) after the cancel that follows.
	m := nats.NewMsg(worker.MeetingSubject(wt.Enterprise, meeting))
	m.Data = wt.Command("new-plan", meeting)
	m.Header.Set("Xygroup-Source-Stream", worker.StreamCommands)
	m.Header.Set("Xygroup-Source-Seq", strconv.Itoa(1_000_000))
	m.Header.Set("Xygroup-Source-Msg-Id", "new-plan")
	m.Header.Set("Xygroup-Received", time.Now().UTC().Format(time.RFC3339Nano))
	if _, err := js.PublishMsg(context.Background(), m); err != nil {
		t.Fatal(err)
	}
	awaitParked(t, js, 2)

	req := commands.CancelRequest{MeetingRoomNumber: meeting, Reason: "the plan changed"}
	cancel(t, js, req)
	wt.Eventually(t, time.Minute, func() bool { return len(terminalByCommand(t, js)["old-plan"]) > 0 }, "old-plan ended")
	sb.StartMeeting(meeting)
	events := wt.AwaitTerminal(t, js, 2, time.Minute)
	for id, want := range map[string]string{"old-plan": subjectCancelled, "new-plan": worker.SubjectCreated} {
		var got []string
		for _, e := range events[id] {
			if e.Terminal() {
				got = append(got, e.Subject)
			}
		}
		if len(got) != 1 || got[0] != want {
			t.Errorf("%s ended %v, want %s", id, got, want)
		}
	}
}
