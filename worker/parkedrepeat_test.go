package worker_test

import (
	"testing"
	"time"

	"github.com/xygroup/xygroup/worker"
	wt "github.com/xygroup/xygroup/worker/workertest"
	"github.com/xygroup/xygroup/xylink/sandbox"
)

// A publisher's repeat of a command that is parked already (the same
// commandId published again, as an at-least-once publisher does after a
// timeout) is left to the parked copy: it takes no second share of the
// stream, so a share that holds the copy but not a second one cannot turn the
// repeat into an over_quota outcome of a command that was accepted.
func TestParkedRepeatAtFullShareKeepsParkedCommand(t *testing.T) {
	srv := wt.StartNATS(t)
	sb := wt.StartSandbox(t, sandbox.Config{Rate: 1e6})
	if _, err := sb.AddMeeting(sandbox.MeetingSpec{Number: "m-rep"}); err != nil {
		t.Fatal(err)
	}
	// A share of ~300 KB: one command of ~200 KB fits, two do not.
	wt.StartWorker(t, srv, wt.Client(t, sb), worker.WithStreams(worker.StreamSettings{CommandsMaxBytes: 4 << 20}),
		worker.WithParkedTenantShare(0.075))
	js := wt.JetStream(t, wt.Connect(t, srv))
	wt.AwaitStream(t, js, worker.StreamCommands)
	wt.AwaitStream(t, js, worker.StreamParked) // parkedMsgs fails the test while it does not exist
	soon := time.Now().Add(10 * time.Second)
	cmd := bigCommand("rep", wt.Enterprise, "m-rep", 4000, "notBefore", at(soon))
	wt.Publish(t, js, "rep-1", cmd)
	wt.Eventually(t, time.Minute, func() bool { return parkedMsgs(t, js) == 1 }, "the command parked")
	wt.Publish(t, js, "rep-2", cmd) // the publisher's retry, under another Nats-Msg-Id
	evs := wt.AwaitTerminal(t, js, 1, 2*time.Minute)
	for _, e := range evs["rep"] {
		if e.Terminal() {
			if e.Subject != "xylink.groups.created" {
				t.Fatalf("the parked command ended %s (%v), want created once its notBefore passed", e.Subject, e.Fields["developerMessage"])
			}
			return
		}
	}
	t.Fatalf("no terminal event for the command: %v", evs)
}
