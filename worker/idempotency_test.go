package worker_test

import (
	"testing"
	"time"

	"github.com/xygroup/xygroup/worker"
	wt "github.com/xygroup/xygroup/worker/workertest"
	"github.com/xygroup/xygroup/xylink"
	"github.com/xygroup/xygroup/xylink/sandbox"
)

// The same commandId published again with a new Nats-Msg-Id after it completed:
// no API call, and the same terminal event (deduped by its Nats-Msg-Id).
func TestRepublishedCommandIsNotSentAgain(t *testing.T) {
	srv := wt.StartNATS(t)
	sb := wt.StartSandbox(t, sandbox.Config{Rate: 1e6})
	wt.StartWorker(t, srv, wt.Client(t, sb))
	js := wt.JetStream(t, wt.Connect(t, srv))
	body := wt.Command("again-1", "m-again")
	wt.Publish(t, js, "again-1", body)
	first := wt.AwaitTerminal(t, js, 1, time.Minute)["again-1"]
	if len(first) != 1 || first[0].Subject != worker.SubjectCreated {
		t.Fatalf("first: %v", first)
	}
	calls := sb.Stats().Requests

	wt.Publish(t, js, "again-1-second-msg-id", body)
	wt.AwaitConsumerIdle(t, js, 30*time.Second)
	if got := sb.Stats().Requests; got != calls {
		t.Fatalf("the API was called again: %d requests, was %d", got, calls)
	}
	if got := wt.TerminalCount(t, js); got != 1 {
		t.Fatalf("%d terminal events, want 1", got)
	}
	// The republished event is identical, so a consumer past the dedupe window
	// would see the same eventId.
	again := wt.AwaitTerminal(t, js, 1, time.Minute)["again-1"]
	if again[0].Fields["eventId"] != first[0].Fields["eventId"] {
		t.Fatal("event ids differ")
	}
}

// A call that times out after the sandbox processed it has an unknown outcome;
// its retry meets 66684 and the command ends as created, reconciled.
func TestTimeoutThenAlreadyOpenIsReconciled(t *testing.T) {
	srv := wt.StartNATS(t)
	sb := wt.StartSandbox(t, sandbox.Config{Rate: 1e6, Faults: sandbox.Faults{Latency: sandbox.Duration(2 * time.Second)}})
	c, err := xylink.NewClient(sb.URL, xylink.WithTimeout(300*time.Millisecond),
		xylink.WithTenants(xylink.Credentials{EnterpriseID: wt.Enterprise, Token: wt.Token}))
	if err != nil {
		t.Fatal(err)
	}
	wt.StartWorker(t, srv, c)
	js := wt.JetStream(t, wt.Connect(t, srv))
	wt.Publish(t, js, "slow-1", wt.Command("slow-1", "m-slow"))
	wt.Eventually(t, 30*time.Second, func() bool {
		m, ok := sb.Meeting("m-slow")
		return ok && m.Creates == 1
	}, "the call processed at the sandbox")
	sb.SetFaults(sandbox.Faults{})
	evs := wt.AwaitTerminal(t, js, 1, time.Minute)["slow-1"]
	if len(evs) != 1 || evs[0].Subject != worker.SubjectCreated || evs[0].Fields["reconciled"] != true {
		t.Fatalf("want a reconciled created event, got %v", evs)
	}
	if groups := evs[0].Fields["groups"].([]any); len(groups) != 0 {
		t.Fatalf("reconciled event carries groups: %v", groups)
	}
	st := sb.Stats()
	if st.ByAnswer["66684"] < 1 || len(st.DuplicateCreates) != 0 {
		t.Fatalf("sandbox: %v, duplicates %v", st.ByAnswer, st.DuplicateCreates)
	}
}
