package worker_test

import (
	"context"
	"encoding/json"
	"strings"
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
// whose groups that request creates. Once the call has ended (here: its
// replica died after sending, so the outcome is unknown), the expiry ends it
// and says the earlier outcome is unknown.
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
	setRecord(func(r map[string]any) {
		r["attempts"], r["sent"] = 2, 2
		r["pendingUntil"] = time.Now().Add(time.Hour).UTC().Format(time.RFC3339Nano)
	})

	// Probes after the deadline: each runs the expiry first.
	wt.Eventually(t, time.Minute, func() bool { return time.Now().After(deadline) }, "the deadline passed")
	probesAt := func() float64 {
		return testutil.ToFloat64(w.Metrics().Probes.WithLabelValues("no_news")) +
			testutil.ToFloat64(w.Metrics().Probes.WithLabelValues("ended"))
	}
	base := probesAt()
	wt.Eventually(t, time.Minute, func() bool { return probesAt() >= base+3 || wt.TerminalCount(t, js) > 0 },
		"three probes after the deadline, or a terminal event")
	if n := wt.TerminalCount(t, js); n != 0 {
		t.Fatalf("%d terminal events while the command's request is at the API; want none: %v", n, wt.StoredEvents(t, js))
	}

	// The call's replica died after sending: its claim runs out, the outcome
	// is unknown, and the expiry may end the command now.
	setRecord(func(r map[string]any) {
		r["pendingUntil"] = time.Now().Add(-time.Second).UTC().Format(time.RFC3339Nano)
	})
	events := wt.AwaitTerminal(t, js, 1, time.Minute)
	var evs []wt.Event
	for _, e := range events[id] {
		if e.Terminal() {
			evs = append(evs, e)
		}
	}
	if len(evs) != 1 || evs[0].Subject != worker.SubjectFailed+".meeting_not_started" {
		t.Fatalf("terminal events of %s: %d, want 1 failed.meeting_not_started", id, len(evs))
	}
	dev, _ := evs[0].Fields["developerMessage"].(string)
	if want := "outcome is unknown"; !strings.Contains(dev, want) {
		t.Errorf("developerMessage %q does not say %q", dev, want)
	}
	if calls := sb.Stats().Requests; calls != 1 {
		t.Errorf("%d calls at the sandbox, want the first one only", calls)
	}
	t.Logf("expired after the call's claim ended: %s", dev)
}
