package worker_test

import (
	"testing"
	"time"

	"github.com/xygroup/xygroup/worker"
	wt "github.com/xygroup/xygroup/worker/workertest"
	"github.com/xygroup/xygroup/xylink/sandbox"
)

// A command's call is in flight when an invalid command with the same
// (enterprise, commandId) arrives (a publisher's broken copy). The call
// creates the groups: the command's terminal event must say so, not
// failed.invalid_command (which would then be its only terminal event, since
// both share the terminal Nats-Msg-Id).
func TestInvalidCopyDoesNotEndACommandInFlight(t *testing.T) {
	srv := wt.StartNATS(t)
	sb := wt.StartSandbox(t, sandbox.Config{Rate: 1e6, Faults: sandbox.Faults{Latency: sandbox.Duration(2 * time.Second)}})
	wt.StartWorker(t, srv, wt.Client(t, sb))
	js := wt.JetStream(t, wt.Connect(t, srv))
	wt.AwaitStream(t, js, worker.StreamCommands)
	wt.Publish(t, js, "fly-1", wt.Command("fly-1", "m-fly"))
	wt.Eventually(t, 30*time.Second, func() bool {
		m, ok := sb.Meeting("m-fly")
		return ok && m.Creates == 1
	}, "the call processed at the sandbox")
	wt.Publish(t, js, "fly-1-broken", []byte(`{"commandId":"fly-1","meetingRoomNumber":"m-fly","groupCount":"two"}`))
	wt.AwaitConsumerIdle(t, js, 30*time.Second)
	evs := allEvents(t, js, 1, 10*time.Second)
	var subjects []string
	for _, e := range evs {
		subjects = append(subjects, e.Subject)
	}
	if m, _ := sb.Meeting("m-fly"); m.Creates != 1 || len(subjects) != 1 || subjects[0] != worker.SubjectCreated {
		t.Fatalf("the groups were created (%d create), and fly-1's terminal events are %v", m.Creates, subjects)
	}
}
