package worker_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/xygroup/xygroup/worker"
	wt "github.com/xygroup/xygroup/worker/workertest"
	"github.com/xygroup/xygroup/xylink/sandbox"
)

// A held command whose earlier request's outcome is unknown (a 504) is tried
// past its deadline, within the reconcile grace. When the outage ends, the
// hold's probe takes it and the API answers 66620: the meeting has not
// started, so that earlier request created nothing and the command ends at
// its passed deadline, with one call; the tenant's API works, so the hold is
// released and the tenant's next command, for a meeting in progress, is
// created instead of joining a hold that stays shut for the grace.
func TestHoldReleasedWhenItsProbeInTheReconcileGraceMeetsAWaitingMeeting(t *testing.T) {
	const waitingMeeting, liveMeeting = "m-hold-grace-waiting", "m-hold-grace-live"
	const held, next = "hold-grace-held", "hold-grace-next"
	srv := wt.StartNATS(t)
	sb := wt.StartSandbox(t, sandbox.Config{Rate: 1e6})
	if _, err := sb.AddMeeting(sandbox.MeetingSpec{Number: waitingMeeting, StartsIn: sandbox.Duration(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	if _, err := sb.AddMeeting(sandbox.MeetingSpec{Number: liveMeeting}); err != nil {
		t.Fatal(err)
	}
	sb.SetFaults(sandbox.Faults{Fail: &sandbox.FixedAnswer{Status: 504}}) // an unknown outcome, and a breaker failure
	w := wt.StartWorker(t, srv, wt.Client(t, sb), worker.WithMaxWait(time.Hour),
		worker.WithBreakerSettings(worker.BreakerSettings{ConsecutiveFailures: 1, OpenFor: 300 * time.Millisecond}),
		worker.WithBackoff(worker.Backoff{Initial: 100 * time.Millisecond, Max: 200 * time.Millisecond}),
		worker.WithProbeBackoff(worker.Backoff{Initial: 200 * time.Millisecond, Max: 300 * time.Millisecond}))
	js := wt.JetStream(t, wt.Connect(t, srv))
	wt.AwaitStream(t, js, worker.StreamCommands)
	deadline := time.Now().Add(2 * time.Second)
	wt.Publish(t, js, held, wt.Command(held, waitingMeeting, "deadline", `"`+deadline.UTC().Format(time.RFC3339Nano)+`"`))

	// Its request's outcome unknown, its deadline passed, held.
	wt.Eventually(t, time.Minute, func() bool {
		kv, err := js.KeyValue(context.Background(), worker.BucketCommands)
		if err != nil {
			return false
		}
		e, err := kv.Get(context.Background(), "t."+wt.Enterprise+"."+held)
		if err != nil {
			return false
		}
		var r struct {
			MaybeCreated bool `json:"maybeCreated"`
		}
		return json.Unmarshal(e.Value(), &r) == nil && r.MaybeCreated
	}, "the command's outcome unknown")
	wt.Eventually(t, time.Minute, func() bool { return time.Now().After(deadline) }, "its deadline passed")
	awaitParked(t, js, 1)
	wt.Eventually(t, time.Minute, func() bool { return w.Checks()["breakers"]() != nil }, "the tenant's breaker open")

	// The outage ends: the hold's probe meets 66620 and the breaker closes.
	sb.SetFaults(sandbox.Faults{})
	wt.Eventually(t, time.Minute, func() bool { return noMeetingAnswers(sb, waitingMeeting) > 0 }, "the hold's probe answered 66620")
	wt.Eventually(t, time.Minute, func() bool { return w.Checks()["breakers"]() == nil }, "the tenant's breaker closed")

	wt.Publish(t, js, next, wt.Command(next, liveMeeting))
	events := wt.AwaitTerminal(t, js, 2, 3*time.Minute)
	want := map[string]string{next: worker.SubjectCreated, held: worker.SubjectFailed + ".meeting_not_started"}
	for id, subject := range want {
		var got []string
		for _, e := range events[id] {
			if e.Terminal() {
				got = append(got, e.Subject)
			}
		}
		if len(got) != 1 || got[0] != subject {
			t.Errorf("%s ended %v, want %s", id, got, subject)
		}
	}
	// One 66620 settled it: the meeting has not started, so no earlier
	// request created its groups and there is nothing to reconcile.
	if n := noMeetingAnswers(sb, waitingMeeting); n != 1 {
		t.Errorf("%d answers 66620 for the held command's meeting, want the one that settled it", n)
	}
}
