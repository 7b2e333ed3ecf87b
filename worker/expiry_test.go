package worker_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/xygroup/xygroup/worker"
	wt "github.com/xygroup/xygroup/worker/workertest"
	"github.com/xygroup/xygroup/xylink/sandbox"
)

// A parked command whose deadline passes while a request for it is at the
// API (a release or a probe let it out a moment before) is not expired: the
// request's answer decides. Expiry claims the command's record as a call
// does, so an expiry never reports failed.meeting_not_started for a command
// whose groups that request creates. When that call's replica dies before it
// reads the answer, the outcome is unknown: the command is tried once more
// past its deadline, and the 66684 it meets reconciles it as created.
func TestExpiryLeavesACommandInFlightToItsCall(t *testing.T) {
	const meeting, id = "m-expiry-race", "expiry-race-1"
	srv := wt.StartNATS(t)
	sb := wt.StartSandbox(t, sandbox.Config{Rate: 1e6})
	if _, err := sb.AddMeeting(sandbox.MeetingSpec{Number: meeting, StartsIn: sandbox.Duration(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	w := wt.StartWorker(t, srv, wt.Client(t, sb),
		worker.WithProbeBackoff(worker.Backoff{Initial: 200 * time.Millisecond, Max: 300 * time.Millisecond}))
	js := wt.JetStream(t, wt.Connect(t, srv))
	deadline := time.Now().Add(3 * time.Second)
	wt.Publish(t, js, id, wt.Command(id, meeting, "deadline", `"`+deadline.UTC().Format(time.RFC3339Nano)+`"`))
	awaitParked(t, js, 1)

	// A release's call for the command: begun and marked sent, its answer not
	// back yet (what a replica's record says while its request is at XYLink).
	kv, err := js.KeyValue(context.Background(), worker.BucketCommands)
	if err != nil {
		t.Fatal(err)
	}
	key := "t." + wt.Enterprise + "." + id
	setRecord := func(change func(map[string]any)) {
		t.Helper()
		e, err := kv.Get(context.Background(), key)
		if err != nil {
			t.Fatal(err)
		}
		var r map[string]any
		if err := json.Unmarshal(e.Value(), &r); err != nil {
			t.Fatal(err)
		}
		change(r)
		b, _ := json.Marshal(r)
		if _, err := kv.Update(context.Background(), key, b, e.Revision()); err != nil {
			t.Fatal(err)
		}
	}
	pendingUntil := deadline.Add(3 * time.Second)
	setRecord(func(r map[string]any) {
		r["attempts"], r["sent"] = 2, 2
		r["pendingUntil"] = pendingUntil.UTC().Format(time.RFC3339Nano)
	})

	// A probe after the deadline: it runs the expiry first.
	wt.Eventually(t, time.Minute, func() bool { return time.Now().After(deadline) }, "the deadline passed")
	probesAt := func() float64 {
		return testutil.ToFloat64(w.Metrics().Probes.WithLabelValues("no_news")) +
			testutil.ToFloat64(w.Metrics().Probes.WithLabelValues("ended"))
	}
	base := probesAt()
	wt.Eventually(t, time.Minute, func() bool { return probesAt() > base || wt.TerminalCount(t, js) > 0 },
		"a probe after the deadline, or a terminal event")
	if time.Now().Before(pendingUntil) {
		if n := wt.TerminalCount(t, js); n != 0 {
			t.Fatalf("%d terminal events while the command's request is at the API; want none: %v", n, wt.StoredEvents(t, js))
		}
	}

	// That request created the groups, but its replica died before it read
	// the answer: its claim runs out, the outcome is unknown, and the next
	// call (past the deadline) meets 66684: the command is reconciled as
	// created, not expired as meeting_not_started.
	sb.SetFaults(sandbox.Faults{Fail: &sandbox.FixedAnswer{Status: 400, ErrorCode: 66684, UserMessage: "already open"}})
	events := wt.AwaitTerminal(t, js, 1, 2*time.Minute)
	var evs []wt.Event
	for _, e := range events[id] {
		if e.Terminal() {
			evs = append(evs, e)
		}
	}
	if len(evs) != 1 || evs[0].Subject != worker.SubjectCreated || evs[0].Fields["reconciled"] != true {
		t.Fatalf("terminal events of %s: %v, want 1 reconciled created", id, evs)
	}
}
