package worker_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/xygroup/xygroup/worker"
	"github.com/xygroup/xygroup/worker/commands"
	wt "github.com/xygroup/xygroup/worker/workertest"
	"github.com/xygroup/xygroup/xylink"
	"github.com/xygroup/xygroup/xylink/sandbox"
)

// shownMeetings is what `xygroup status` and the status page show of parked work.
func shownMeetings(t *testing.T, js jetstream.JetStream) []worker.ParkedMeeting {
	t.Helper()
	ms, err := worker.ParkedMeetings(context.Background(), js)
	if err != nil {
		t.Fatal(err)
	}
	return ms
}

func awaitNoMeetingShown(t *testing.T, js jetstream.JetStream, why string) {
	t.Helper()
	wt.Eventually(t, 30*time.Second, func() bool { return len(shownMeetings(t, js)) == 0 }, why)
}

// A meeting whose last parked command ends outside a probe (cancelled, by its
// meeting or by its id) is not shown waiting for a probe far ahead: its record
// goes. A new plan for the meeting then parks and is sent as usual.
func TestMeetingForgottenWhenItsCommandsAreCancelled(t *testing.T) {
	const meeting = "m-stale"
	srv := wt.StartNATS(t)
	sb := wt.StartSandbox(t, sandbox.Config{Rate: 1e6})
	c := wt.Client(t, sb)
	if _, err := sb.AddMeeting(sandbox.MeetingSpec{Number: meeting, StartsIn: sandbox.Duration(-time.Minute)}); err != nil {
		t.Fatal(err)
	}
	wt.StartWorker(t, srv, c)
	js := wt.JetStream(t, wt.Connect(t, srv))
	wt.AwaitStream(t, js, worker.StreamCommands)
	wt.AwaitStream(t, js, worker.StreamEvents)
	farAhead := fmt.Sprintf("%q", time.Now().Add(48*time.Hour).UTC().Format(time.RFC3339)) // within the horizon

	for round, req := range []commands.CancelRequest{
		{EnterpriseID: wt.Enterprise, MeetingRoomNumber: meeting},
		{EnterpriseID: wt.Enterprise, CommandID: "stale-1"},
	} {
		id := fmt.Sprintf("stale-%d", round)
		wt.Publish(t, js, id, wt.Command(id, meeting, "notBefore", farAhead))
		awaitParked(t, js, 1)
		// The record is written after the command is stored.
		wt.Eventually(t, 30*time.Second, func() bool {
			ms := shownMeetings(t, js)
			return len(ms) == 1 && ms[0].State == "waiting" && ms[0].Parked == 1
		}, fmt.Sprintf("round %d: the meeting shown waiting with its command", round))
		cancel(t, js, req)
		wt.Eventually(t, 30*time.Second, func() bool { return subjectCount(t, js, subjectCancelled) == round+1 }, "the cancelled event")
		awaitNoMeetingShown(t, js, fmt.Sprintf("round %d: the meeting no longer shown once its only command was cancelled", round))
	}

	// The new plan: parked behind a near notBefore, then sent.
	soon := fmt.Sprintf("%q", time.Now().Add(time.Second).UTC().Format(time.RFC3339Nano))
	wt.Publish(t, js, "new-plan", wt.Command("new-plan", meeting, "notBefore", soon))
	wt.Eventually(t, time.Minute, func() bool { return subjectCount(t, js, worker.SubjectCreated) == 1 }, "the new plan created")
	awaitNoMeetingShown(t, js, "the meeting no longer shown once its new plan was sent")
}

// A meeting whose only parked command passed its deadline is forgotten.
func TestMeetingForgottenWhenItsCommandsExpire(t *testing.T) {
	const meeting = "m-expire"
	srv := wt.StartNATS(t)
	sb := wt.StartSandbox(t, sandbox.Config{Rate: 1e6})
	c := wt.Client(t, sb)
	if _, err := sb.AddMeeting(sandbox.MeetingSpec{Number: meeting, StartsIn: sandbox.Duration(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	wt.StartWorker(t, srv, c)
	js := wt.JetStream(t, wt.Connect(t, srv))
	deadline := fmt.Sprintf("%q", time.Now().Add(3*time.Second).UTC().Format(time.RFC3339Nano))
	wt.Publish(t, js, "expires", wt.Command("expires", meeting, "deadline", deadline))
	events := wt.AwaitTerminal(t, js, 1, time.Minute)
	if evs := events["expires"]; len(evs) == 0 || evs[len(evs)-1].Subject != worker.SubjectFailed+".meeting_not_started" {
		t.Fatalf("events %v, want failed.meeting_not_started", evs)
	}
	awaitNoMeetingShown(t, js, "the meeting no longer shown once its only command expired")
}

// A command parked behind a notBefore earlier than the meeting's next probe
// (another command's later notBefore) is tried at its notBefore, not at the
// other's.
func TestParkedEarlierNotBeforeMovesTheProbe(t *testing.T) {
	const meeting = "m-earlier"
	srv := wt.StartNATS(t)
	sb := wt.StartSandbox(t, sandbox.Config{Rate: 1e6})
	c := wt.Client(t, sb)
	if _, err := sb.AddMeeting(sandbox.MeetingSpec{Number: meeting, StartsIn: sandbox.Duration(-time.Minute)}); err != nil {
		t.Fatal(err)
	}
	wt.StartWorker(t, srv, c)
	js := wt.JetStream(t, wt.Connect(t, srv))
	later := fmt.Sprintf("%q", time.Now().Add(time.Hour).UTC().Format(time.RFC3339))
	wt.Publish(t, js, "later", wt.Command("later", meeting, "notBefore", later))
	awaitParked(t, js, 1)
	soon := fmt.Sprintf("%q", time.Now().Add(2*time.Second).UTC().Format(time.RFC3339Nano))
	wt.Publish(t, js, "soon", wt.Command("soon", meeting, "notBefore", soon))
	events := wt.AwaitTerminal(t, js, 1, time.Minute)
	if evs := events["soon"]; len(evs) == 0 || evs[len(evs)-1].Subject != worker.SubjectCreated {
		t.Fatalf("events %v, want soon created", events)
	}
}

// A tenant held for refused credentials whose held commands are all cancelled
// is no longer shown held; its next command is held again (no call goes with
// the wrong credentials but the hold's probes), and is created once the
// credentials are right.
func TestHoldForgottenWhenItsCommandsAreCancelled(t *testing.T) {
	const meeting = "m-held"
	srv := wt.StartNATS(t)
	sb := wt.StartSandbox(t, sandbox.Config{Rate: 1e6})
	if _, err := sb.AddMeeting(sandbox.MeetingSpec{Number: meeting, StartsIn: sandbox.Duration(-time.Minute)}); err != nil {
		t.Fatal(err)
	}
	c, err := xylink.NewClient(sb.URL, xylink.WithTenants(xylink.Credentials{EnterpriseID: wt.Enterprise, Token: "wrong-token"}))
	if err != nil {
		t.Fatal(err)
	}
	wt.StartWorker(t, srv, c, worker.WithBreakerSettings(worker.BreakerSettings{CredentialsRetry: time.Second}))
	js := wt.JetStream(t, wt.Connect(t, srv))
	wt.AwaitStream(t, js, worker.StreamCommands)
	wt.AwaitStream(t, js, worker.StreamEvents)
	heldShown := func() bool {
		ms := shownMeetings(t, js)
		return len(ms) == 1 && ms[0].Kind == "breaker" && ms[0].State == "waiting" && ms[0].Parked >= 1
	}
	for i := range 2 {
		id := fmt.Sprintf("held-%d", i)
		wt.Publish(t, js, id, wt.Command(id, meeting))
	}
	awaitParked(t, js, 2)
	wt.Eventually(t, 30*time.Second, heldShown, "the tenant shown held")

	cancel(t, js, commands.CancelRequest{EnterpriseID: wt.Enterprise, MeetingRoomNumber: meeting})
	wt.Eventually(t, 30*time.Second, func() bool { return subjectCount(t, js, subjectCancelled) == 2 }, "both held commands cancelled")
	awaitNoMeetingShown(t, js, "the hold no longer shown once its commands were cancelled")

	wt.Publish(t, js, "held-new", wt.Command("held-new", meeting))
	awaitParked(t, js, 1)
	wt.Eventually(t, 30*time.Second, heldShown, "the tenant's new command held")
	if err := c.AddTenant(xylink.Credentials{EnterpriseID: wt.Enterprise, Token: wt.Token}); err != nil {
		t.Fatal(err)
	}
	wt.Eventually(t, time.Minute, func() bool { return subjectCount(t, js, worker.SubjectCreated) == 1 }, "the new command created")
	awaitNoMeetingShown(t, js, "nothing shown once the new command was created")
}
