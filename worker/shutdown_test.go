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
	wt.Eventually(t, 30*time.Second, func() bool { return sb.Stats().Requests >= 8 }, "calls of the first worker")
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

// A drain cut short: the calls still in flight when the drain timeout ends are
// cancelled by the worker itself, which says nothing about XYLink's health. The
// tenant's breaker stays closed for the whole cluster, and the cancelled
// commands go back at once: another worker completes them long before AckWait
// (5 minutes here) would have returned them.
func TestDrainCutShortKeepsTheBreakerClosed(t *testing.T) {
	srv := wt.StartNATS(t)
	sb := wt.StartSandbox(t, sandbox.Config{Rate: 1e6, Faults: sandbox.Faults{Latency: sandbox.Duration(5 * time.Second)}})
	c := wt.Client(t, sb)
	streams := worker.WithStreams(worker.StreamSettings{AckWait: 5 * time.Minute})
	const n = 8
	first := wt.StartWorker(t, srv, c, streams, worker.WithConcurrency(n), worker.WithDrainTimeout(200*time.Millisecond))
	js := wt.JetStream(t, wt.Connect(t, srv))
	wt.AwaitStream(t, js, worker.StreamCommands)
	for i := range n {
		id := fmt.Sprintf("cut-%d", i)
		wt.Publish(t, js, id, wt.Command(id, "m-"+id))
	}
	// Every call has reached the sandbox (it acts, then answers 5 s later).
	wt.Eventually(t, 30*time.Second, func() bool {
		created := 0
		for _, m := range sb.Meetings() {
			created += m.Creates
		}
		return created == n
	}, "every call at the sandbox")
	second := wt.StartWorker(t, srv, c, streams, worker.WithConcurrency(n))
	stopped := time.Now()
	if err := first.Stop(); err != nil {
		t.Fatal(err)
	}
	sb.SetFaults(sandbox.Faults{})
	// Awaited for less than AckWait: a command not given back by the stopping
	// worker would not be redelivered to the other one within it.
	events := wt.AwaitTerminal(t, js, n, 2*time.Minute)
	took := time.Since(stopped)
	for id, evs := range events {
		if len(evs) != 1 || evs[0].Subject != worker.SubjectCreated || evs[0].Fields["reconciled"] != true {
			t.Errorf("%s: %d events, first on %s: %s", id, len(evs), evs[0].Subject, evs[0].Data)
		}
	}
	opens := breakerOpens(t, js)
	t.Logf("%d calls cut short by the drain; all completed by the other worker %v after the stop; breaker opens %d; readiness %v",
		n, took.Round(100*time.Millisecond), opens, second.Checks()["breakers"]())
	if opens != 0 {
		t.Fatalf("the tenant's breaker opened %d times after calls cancelled by our own shutdown", opens)
	}
}
