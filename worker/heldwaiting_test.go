package worker_test

import (
	"context"
	"testing"
	"time"

	"github.com/xygroup/xygroup/worker"
	wt "github.com/xygroup/xygroup/worker/workertest"
	"github.com/xygroup/xygroup/xylink"
	"github.com/xygroup/xygroup/xylink/sandbox"
)

// noMeetingAnswers counts the API's 66620 answers for meeting.
func noMeetingAnswers(sb *sandbox.Server, meeting string) int {
	n := 0
	for _, r := range sb.Requests() {
		if r.Endpoint == "dynamicGroup" && r.Meeting == meeting && r.ErrorCode == xylink.CodeNoMeeting {
			n++
		}
	}
	return n
}

// A command held while its tenant's breaker was open, whose hold's probe then
// learns that its meeting has not started, moves to its meeting and waits
// there through as many probes as it takes. Its copies are parked under ids
// made of its place in the commands stream and a delivery count (the hold's
// probes, then the meeting's, counted apart): none may be taken for a
// duplicate of an earlier one and dropped while the copy it replaces is
// removed, or the command would end without a terminal event.
func TestHeldThenWaitingCommandSurvivesItsProbes(t *testing.T) {
	const meeting = "m-held-then-waiting"
	srv := wt.StartNATS(t)
	sb := wt.StartSandbox(t, sandbox.Config{Rate: 1e6})
	if _, err := sb.AddMeeting(sandbox.MeetingSpec{Number: meeting, StartsIn: sandbox.Duration(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	sb.AddOutage(sandbox.Outage{From: time.Now(), Until: time.Now().Add(time.Hour)})
	w := wt.StartWorker(t, srv, wt.Client(t, sb), worker.WithMaxWait(time.Hour),
		worker.WithBreakerSettings(worker.BreakerSettings{ConsecutiveFailures: 1, OpenFor: 500 * time.Millisecond}),
		worker.WithBackoff(worker.Backoff{Initial: 100 * time.Millisecond, Max: 200 * time.Millisecond}),
		worker.WithProbeBackoff(worker.Backoff{Initial: 200 * time.Millisecond, Max: 300 * time.Millisecond}))
	js := wt.JetStream(t, wt.Connect(t, srv))
	wt.AwaitStream(t, js, worker.StreamCommands)
	wt.Publish(t, js, "held-then-waiting", wt.Command("held-then-waiting", meeting))

	// Held, and its hold probed a few times while the outage lasts.
	wt.Eventually(t, time.Minute, func() bool { return w.Checks()["breakers"]() != nil }, "the tenant's breaker open")
	wt.Eventually(t, time.Minute, func() bool {
		n := 0
		for _, r := range sb.Requests() {
			if r.Endpoint == "dynamicGroup" && r.Status == 503 {
				n++
			}
		}
		return n >= 3
	}, "the hold probed during the outage")
	sb.ClearOutages()
	// Now the meeting answers 66620 to the hold's probe and to its own,
	// probe after probe: more of them than the hold had.
	wt.Eventually(t, 2*time.Minute, func() bool { return noMeetingAnswers(sb, meeting) >= 10 }, "ten probes of the waiting meeting")

	parked, err := js.Stream(context.Background(), worker.StreamParked)
	if err != nil {
		t.Fatal(err)
	}
	info, err := parked.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs == 0 && wt.TerminalCount(t, js) == 0 {
		t.Fatalf("the command is neither parked nor ended after %d probes that found its meeting waiting: lost",
			noMeetingAnswers(sb, meeting))
	}
	sb.StartMeeting(meeting)
	var terminal []string
	for _, e := range wt.AwaitTerminal(t, js, 1, time.Minute)["held-then-waiting"] {
		if e.Terminal() {
			terminal = append(terminal, e.Subject)
		}
	}
	if len(terminal) != 1 || terminal[0] != worker.SubjectCreated {
		t.Fatalf("terminal events %v, want one created", terminal)
	}
}
