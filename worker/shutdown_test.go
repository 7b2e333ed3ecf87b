package worker_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/xygroup/xygroup/worker"
	wt "github.com/xygroup/xygroup/worker/workertest"
	"github.com/xygroup/xygroup/xylink/sandbox"
)

// Stopping a worker (what SIGTERM does) with commands in flight: it finishes them,
// releases what it had buffered, and another replica completes the rest. No
// command is lost, none is created twice.
func TestStopWithCommandsInFlight(t *testing.T) {
	srv := wt.StartNATS(t)
	sb := wt.StartSandbox(t, sandbox.Config{Rate: 100000, Faults: sandbox.Faults{Latency: sandbox.Duration(300 * time.Millisecond)}})
	c := wt.Client(t, sb)
	first := wt.StartWorker(t, srv, c, worker.WithConcurrency(8), worker.WithDrainTimeout(10*time.Second))
	js := wt.JetStream(t, wt.Connect(t, srv))
	const n = 60
	for i := range n {
		id := fmt.Sprintf("stop-%02d", i)
		wt.Publish(t, js, id, wt.Command(id, "m-stop-"+id))
	}
	// Wait until the first worker has calls in flight.
	deadline := time.Now().Add(30 * time.Second)
	for sb.Stats().Requests < 8 {
		if time.Now().After(deadline) {
			t.Fatal("the first worker made no calls")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := first.Stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}
	doneByFirst := sb.Stats().ByAnswer["200"]
	if doneByFirst == 0 || doneByFirst >= n {
		t.Fatalf("first worker completed %d of %d; the test needs some left", doneByFirst, n)
	}
	wt.StartWorker(t, srv, c, worker.WithConcurrency(8))
	events := wt.AwaitTerminal(t, js, n, time.Minute)
	for id, evs := range events {
		if len(evs) != 1 || evs[0].Subject != worker.SubjectCreated {
			t.Errorf("%s: %d events, first on %s", id, len(evs), evs[0].Subject)
		}
	}
	st := sb.Stats()
	if len(st.DuplicateCreates) != 0 || st.ByAnswer["66684"] != 0 || st.ByAnswer["200"] != n {
		t.Fatalf("sandbox saw %v (duplicates %v)", st.ByAnswer, st.DuplicateCreates)
	}
	if got := wt.TerminalCount(t, js); got != n {
		t.Fatalf("%d terminal events, want %d", got, n)
	}
	t.Logf("first worker completed %d before stopping; the second the other %d", doneByFirst, n-doneByFirst)
}
