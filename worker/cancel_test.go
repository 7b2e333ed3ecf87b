package worker_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/xygroup/xygroup/worker"
	"github.com/xygroup/xygroup/worker/commands"
	"github.com/xygroup/xygroup/worker/contract"
	wt "github.com/xygroup/xygroup/worker/workertest"
	"github.com/xygroup/xygroup/xylink"
	"github.com/xygroup/xygroup/xylink/sandbox"
)

const subjectCancelled = worker.SubjectFailed + ".cancelled"

// cancel publishes a cancel through the Go client and returns its id.
func cancel(t *testing.T, js jetstream.JetStream, req commands.CancelRequest) string {
	t.Helper()
	ctx, stop := context.WithTimeout(context.Background(), 10*time.Second)
	defer stop()
	id, err := commands.Cancel(ctx, js, req)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// awaitCancel waits for a command cancel's outcome.
func awaitCancel(t *testing.T, js jetstream.JetStream, req commands.CancelRequest, id string, since time.Time) commands.CancelOutcome {
	t.Helper()
	ctx, stop := context.WithTimeout(context.Background(), time.Minute)
	defer stop()
	out, err := commands.AwaitCancel(ctx, js, req, id, since, 0)
	if err != nil || len(out) == 0 {
		t.Fatalf("cancel %s of %s: no outcome (%v)", id, req.CommandID, err)
	}
	return out[0]
}

// subjectCount is how many messages of the events stream are on subject.
func subjectCount(t *testing.T, js jetstream.JetStream, subject string) int {
	t.Helper()
	s, err := js.Stream(context.Background(), worker.StreamEvents)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(context.Background(), jetstream.WithSubjectFilter(subject))
	if err != nil {
		t.Fatal(err)
	}
	return int(info.State.Subjects[subject])
}

// terminalByCommand reads every terminal event stored, by commandId.
func terminalByCommand(t *testing.T, js jetstream.JetStream) map[string][]wt.Event {
	t.Helper()
	out := map[string][]wt.Event{}
	for _, e := range wt.StoredEvents(t, js) {
		if contract.IsTerminal(e.Subject) {
			out[e.CommandID()] = append(out[e.CommandID()], e)
		}
	}
	return out
}

// callsFor counts the sandbox's create calls for a meeting at or after since.
func callsFor(sb *sandbox.Server, meeting string, since time.Time) (calls, created int) {
	for _, r := range sb.Requests() {
		if r.Endpoint == "dynamicGroup" && r.Meeting == meeting && !r.At.Before(since) {
			calls++
			if r.Status == 200 && r.ErrorCode == 0 {
				created++
			}
		}
	}
	return calls, created
}

// Under three workers: commands queued (notBefore ahead), parked (meeting not
// started), held (tenant's breaker open) and cancelled before they were
// published end cancelled without a call after the cancel; a command whose
// call is at the API, or was sent before, is answered cancel_rejected and
// ends as its call says.
func TestCancelUnderThreeWorkers(t *testing.T) {
	const held = "held-ent"
	srv := wt.StartNATS(t)
	sb := wt.StartSandbox(t, sandbox.Config{Rate: 1e6, Enterprises: []sandbox.Enterprise{{ID: held, Token: "held-token"}}})
	c := wt.Client(t, sb, xylink.Credentials{EnterpriseID: held, Token: "held-token"})
	var workers []*wt.Running
	for range 3 {
		workers = append(workers, wt.StartWorker(t, srv, c,
			worker.WithBreakerSettings(worker.BreakerSettings{ConsecutiveFailures: 3, OpenFor: 5 * time.Second}),
			worker.WithProbeBackoff(worker.Backoff{Initial: 200 * time.Millisecond, Max: time.Second})))
	}
	js := wt.JetStream(t, wt.Connect(t, srv))
	wt.AwaitStream(t, js, worker.StreamCommands)
	wt.AwaitStream(t, js, worker.StreamEvents) // cancels are answered there
	if _, err := sb.AddMeeting(sandbox.MeetingSpec{Number: "m-parked", StartsIn: sandbox.Duration(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	later := fmt.Sprintf("%q", time.Now().Add(time.Hour).UTC().Format(time.RFC3339))
	start := time.Now()

	// Cancelled before they are published: one goes straight, one would park.
	cancel(t, js, commands.CancelRequest{CommandID: "early", Reason: "plan changed"})
	cancel(t, js, commands.CancelRequest{CommandID: "early-later", Reason: "plan changed"})
	wt.AwaitConsumerIdle(t, js, 30*time.Second)
	wt.Publish(t, js, "early", wt.Command("early", "m-early"))
	wt.Publish(t, js, "early-later", wt.Command("early-later", "m-early-later", "notBefore", later))

	// Queued until notBefore, and parked until its meeting starts.
	wt.Publish(t, js, "queued", wt.Command("queued", "m-queued", "notBefore", later))
	wt.Publish(t, js, "parked", wt.Command("parked", "m-parked"))
	awaitParked(t, js, 2)
	cancelAt := time.Now()
	for _, id := range []string{"queued", "parked"} {
		req := commands.CancelRequest{CommandID: id, Reason: "not needed"}
		out := awaitCancel(t, js, req, cancel(t, js, req), cancelAt)
		if !out.Cancelled() || out.Event.Reason != "not needed" || out.Event.Class != "cancelled" {
			t.Errorf("%s: outcome %s %+v", id, out.Subject, out.Event)
		}
	}
	awaitParked(t, js, 0) // a cancelled command leaves the parked stream at once

	// Held: the tenant's breaker opens in an outage; a command that came after
	// never reached the API; one that did may have been sent.
	sb.AddOutage(sandbox.Outage{EnterpriseID: held, From: time.Now(), Until: time.Now().Add(time.Hour)})
	for i := range 3 {
		id := fmt.Sprintf("trip-%d", i)
		wt.Publish(t, js, id, wt.Command(id, "m-"+id, "enterpriseId", fmt.Sprintf("%q", held)))
	}
	wt.Eventually(t, time.Minute, func() bool { return workers[0].Checks()["breakers"]() != nil }, "the held tenant's breaker open")
	wt.Publish(t, js, "held", wt.Command("held", "m-held", "enterpriseId", fmt.Sprintf("%q", held)))
	awaitParked(t, js, 4)
	heldAt := time.Now()
	req := commands.CancelRequest{CommandID: "held", EnterpriseID: held}
	if out := awaitCancel(t, js, req, cancel(t, js, req), heldAt); !out.Cancelled() {
		t.Errorf("held: outcome %s %+v", out.Subject, out.Event)
	}
	// Its calls were answered (503, not processed): none took effect.
	req = commands.CancelRequest{CommandID: "trip-0", EnterpriseID: held}
	if out := awaitCancel(t, js, req, cancel(t, js, req), heldAt); !out.Cancelled() {
		t.Errorf("trip-0: outcome %s %+v", out.Subject, out.Event)
	}
	tripCancelled := time.Now()
	sb.ClearOutages()

	// In flight: its request is at the API when the cancel comes.
	sb.SetFaults(sandbox.Faults{Latency: sandbox.Duration(3 * time.Second)})
	wt.Publish(t, js, "flying", wt.Command("flying", "m-flying"))
	awaitCallAtSandbox(t, sb)
	flyAt := time.Now()
	req = commands.CancelRequest{CommandID: "flying"}
	if out := awaitCancel(t, js, req, cancel(t, js, req), flyAt); out.Subject != worker.SubjectCancelRejected || out.Event.Reason != contract.RejectedInFlight {
		t.Errorf("flying: outcome %s %+v", out.Subject, out.Event)
	}
	sb.SetFaults(sandbox.Faults{})
	wt.Eventually(t, time.Minute, func() bool { return wt.TerminalCount(t, js) >= 8 }, "flying created")

	// Unknown: its call answered 500, which may have taken effect.
	sb.SetFaults(sandbox.Faults{ErrorRatio: 1})
	wt.Publish(t, js, "unknown", wt.Command("unknown", "m-unknown"))
	wt.Eventually(t, time.Minute, func() bool {
		calls, _ := callsFor(sb, "m-unknown", time.Time{})
		return calls > 0 && commandRecord(t, js, "unknown").MaybeCreated
	}, "a call of unknown outcome")
	req = commands.CancelRequest{CommandID: "unknown"}
	unknownAt := time.Now() // before the cancel: its answer may come at once
	if out := awaitCancel(t, js, req, cancel(t, js, req), unknownAt); out.Subject != worker.SubjectCancelRejected || out.Event.Reason != contract.RejectedAlreadySent {
		t.Errorf("unknown: outcome %s %+v", out.Subject, out.Event)
	}
	sb.SetFaults(sandbox.Faults{})

	want := map[string]string{"early": subjectCancelled, "early-later": subjectCancelled, "queued": subjectCancelled,
		"parked": subjectCancelled, "held": subjectCancelled, "trip-0": subjectCancelled, "unknown": worker.SubjectCreated, "trip-1": worker.SubjectCreated,
		"trip-2": worker.SubjectCreated, "flying": worker.SubjectCreated}
	wt.Eventually(t, 2*time.Minute, func() bool { return wt.TerminalCount(t, js) >= len(want) }, "every command's terminal event")
	byCommand := terminalByCommand(t, js)
	for id, subject := range want {
		evs := byCommand[id]
		if len(evs) != 1 || evs[0].Subject != subject {
			t.Errorf("%s: %d terminal events, want one on %s: %v", id, len(evs), subject, evs)
		}
	}
	since := map[string]time.Time{"early": start, "early-later": start, "queued": start, "parked": cancelAt, "held": heldAt, "trip-0": tripCancelled}
	for id, at := range since {
		if calls, _ := callsFor(sb, "m-"+id, at); calls != 0 {
			t.Errorf("%s: %d calls at the sandbox after its cancel", id, calls)
		}
	}
	if d := sb.Stats().DuplicateCreates; len(d) > 0 {
		t.Errorf("duplicate creates: %v", d)
	}
	t.Logf("%d commands, %d terminal events, %d cancelled, %d cancel_rejected", len(want), wt.TerminalCount(t, js),
		subjectCount(t, js, subjectCancelled), subjectCount(t, js, worker.SubjectCancelRejected))
}

// A cancel published at the moment its meeting starts races the meeting's
// probe: each command is either cancelled and never created, or created and
// its cancel rejected; never both, never neither.
func TestCancelRacesMeetingStart(t *testing.T) {
	const n = 30
	srv := wt.StartNATS(t)
	sb := wt.StartSandbox(t, sandbox.Config{Rate: 1e6})
	c := wt.Client(t, sb)
	for range 3 {
		wt.StartWorker(t, srv, c, worker.WithProbeBackoff(worker.Backoff{Initial: 100 * time.Millisecond, Max: 300 * time.Millisecond}))
	}
	js := wt.JetStream(t, wt.Connect(t, srv))
	wt.AwaitStream(t, js, worker.StreamCommands)
	wt.AwaitStream(t, js, worker.StreamEvents) // cancels are answered there
	for i := range n {
		id := fmt.Sprintf("race-%02d", i)
		if _, err := sb.AddMeeting(sandbox.MeetingSpec{Number: "m-" + id, StartsIn: sandbox.Duration(time.Hour)}); err != nil {
			t.Fatal(err)
		}
		wt.Publish(t, js, id, wt.Command(id, "m-"+id))
	}
	awaitParked(t, js, n)
	var wg sync.WaitGroup
	for i := range n {
		id := fmt.Sprintf("race-%02d", i)
		// The meetings start together; their cancels follow over half a
		// second, so that some meet their probe before, at or after its
		// request.
		offset := time.Duration(i) * 20 * time.Millisecond
		wg.Go(func() {
			sb.StartMeeting("m-" + id)
			time.Sleep(offset)
			cancel(t, js, commands.CancelRequest{CommandID: id, CancelID: "cancel-" + id, Reason: "race"})
		})
	}
	wg.Wait()
	wt.Eventually(t, 2*time.Minute, func() bool { return wt.TerminalCount(t, js) >= n }, "every command's terminal event")
	wt.Eventually(t, time.Minute, func() bool {
		return subjectCount(t, js, subjectCancelled)+subjectCount(t, js, worker.SubjectCancelRejected) >= n
	}, "an answer to every cancel")

	byCommand := terminalByCommand(t, js)
	answered := map[string]string{}
	for _, e := range wt.StoredEvents(t, js) {
		if e.Subject == worker.SubjectCancelRejected {
			answered[e.CommandID()] = "rejected"
		}
	}
	cancelled, created := 0, 0
	for i := range n {
		id := fmt.Sprintf("race-%02d", i)
		evs := byCommand[id]
		if len(evs) != 1 {
			t.Errorf("%s: %d terminal events", id, len(evs))
			continue
		}
		_, groups := callsFor(sb, "m-"+id, time.Time{})
		switch evs[0].Subject {
		case subjectCancelled:
			cancelled++
			if groups != 0 || answered[id] != "" {
				t.Errorf("%s: cancelled, yet %d groups created and its cancel answered %q", id, groups, answered[id])
			}
		case worker.SubjectCreated:
			created++
			if groups != 1 || answered[id] != "rejected" {
				t.Errorf("%s: created %d times, its cancel answered %q", id, groups, answered[id])
			}
		default:
			t.Errorf("%s: ended on %s", id, evs[0].Subject)
		}
	}
	if d := sb.Stats().DuplicateCreates; len(d) > 0 {
		t.Errorf("duplicate creates: %v", d)
	}
	t.Logf("%d commands: %d cancelled, %d created with their cancel rejected", n, cancelled, created)
}

// tenantCalls counts the sandbox's create calls for a tenant's meeting in
// [from, to) (to zero: no end), and those that created groups.
func tenantCalls(sb *sandbox.Server, enterprise, meeting string, from, to time.Time) (calls, created int) {
	for _, r := range sb.Requests() {
		if r.Endpoint != "dynamicGroup" || r.EnterpriseID != enterprise || r.Meeting != meeting || r.At.Before(from) ||
			(!to.IsZero() && !r.At.Before(to)) {
			continue
		}
		calls++
		if r.Status == 200 && r.ErrorCode == 0 {
			created++
		}
	}
	return calls, created
}

func subjectsOf(evs []wt.Event) []string {
	out := make([]string, len(evs))
	for i, e := range evs {
		out[i] = e.Subject
	}
	return out
}

// Cancel by meeting under three workers: every command of the meeting and
// tenant not sent yet (parked for the meeting, parked behind a notBefore)
// ends cancelled once and leaves the parked stream, with no call after the
// cancel; another meeting of the tenant, and the same meeting number in
// another tenant, are not touched; a command of the meeting published after
// the cancel is a new plan: it waits for the meeting and is created.
func TestCancelByMeetingUnderThreeWorkers(t *testing.T) {
	const (
		other        = "other-ent"
		meeting      = "m-plan"
		otherMeeting = "m-other"
		reason       = "meeting moved"
	)
	srv := wt.StartNATS(t)
	sb := wt.StartSandbox(t, sandbox.Config{Rate: 1e6, Enterprises: []sandbox.Enterprise{{ID: other, Token: "other-token"}}})
	c := wt.Client(t, sb, xylink.Credentials{EnterpriseID: other, Token: "other-token"})
	// A meeting's first probe comes 15 s after it parks: the cancel comes
	// before it, so no probe is at the API then (a probe in flight would be
	// answered in_flight, as TestCancelRacesMeetingStart shows).
	for range 3 {
		wt.StartWorker(t, srv, c, worker.WithProbeBackoff(worker.Backoff{Initial: 15 * time.Second, Max: 15 * time.Second}))
	}
	js := wt.JetStream(t, wt.Connect(t, srv))
	wt.AwaitStream(t, js, worker.StreamCommands)
	wt.AwaitStream(t, js, worker.StreamEvents) // cancels are answered there
	for _, m := range []string{meeting, otherMeeting} {
		if _, err := sb.AddMeeting(sandbox.MeetingSpec{Number: m, StartsIn: sandbox.Duration(time.Hour)}); err != nil {
			t.Fatal(err)
		}
	}
	later := fmt.Sprintf("%q", time.Now().Add(time.Hour).UTC().Format(time.RFC3339))
	otherEnt := fmt.Sprintf("%q", other)

	// Parked for the meeting (its first call answered 66620), then behind a
	// notBefore; and a command of another meeting, and of the same meeting
	// number in another tenant. That one waits behind a notBefore so that it
	// is still parked when the meeting starts: the sandbox keys meetings by
	// number, and its groups would be the new plan's.
	var plan []string
	for i := range 3 {
		id := fmt.Sprintf("plan-%d", i)
		plan = append(plan, id)
		wt.Publish(t, js, id, wt.Command(id, meeting))
	}
	awaitParked(t, js, 3)
	for i := 3; i < 5; i++ {
		id := fmt.Sprintf("plan-%d", i)
		plan = append(plan, id)
		wt.Publish(t, js, id, wt.Command(id, meeting, "notBefore", later))
	}
	wt.Publish(t, js, "other-meeting", wt.Command("other-meeting", otherMeeting))
	wt.Publish(t, js, "other-tenant", wt.Command("other-tenant", meeting, "enterpriseId", otherEnt, "notBefore", later))
	awaitParked(t, js, 7)

	cancelAt := time.Now()
	id := cancel(t, js, commands.CancelRequest{MeetingRoomNumber: meeting, Reason: reason})
	wt.Eventually(t, time.Minute, func() bool { return subjectCount(t, js, subjectCancelled) >= len(plan) }, "the meeting's commands cancelled")
	awaitParked(t, js, 2) // they leave the parked stream at once; the other two stay
	answeredAt := time.Now()

	// A new plan for the meeting: it waits for the meeting like any command.
	// The cancel left the meeting without commands, and so forgotten: the
	// new plan's first call finds it waiting again (unless the new plan came
	// before the forget reached its replica: then it parks without a call).
	wt.Publish(t, js, "plan-new", wt.Command("plan-new", meeting))
	awaitParked(t, js, 3)
	newPlanAt := time.Now()
	first, _ := tenantCalls(sb, wt.Enterprise, meeting, cancelAt, newPlanAt)
	if first > 1 {
		t.Errorf("%d calls for the cancelled meeting after its cancel, want at most the new plan's first", first)
	}
	if n := subjectCount(t, js, worker.SubjectCancelRejected); n != 0 {
		t.Errorf("%d cancel_rejected answers, want none", n)
	}
	for _, e := range wt.StoredEvents(t, js) {
		if e.CommandID() == "plan-new" && e.Terminal() {
			t.Errorf("plan-new ended on %s while its meeting waits", e.Subject)
		}
	}

	// The meeting starts: the new plan is created; the other meeting and the
	// other tenant's command still wait.
	sb.StartMeeting(meeting)
	wt.Eventually(t, time.Minute, func() bool { return wt.TerminalCount(t, js) >= len(plan)+1 }, "the new plan created")
	awaitParked(t, js, 2)

	byCommand := terminalByCommand(t, js)
	for _, p := range plan {
		evs := byCommand[p]
		if len(evs) != 1 || evs[0].Subject != subjectCancelled {
			t.Errorf("%s: terminal events %v, want one on %s", p, subjectsOf(evs), subjectCancelled)
			continue
		}
		if evs[0].Fields["cancelId"] != id || evs[0].Fields["reason"] != reason {
			t.Errorf("%s: cancelled with cancelId %v, reason %v; want %s, %q", p, evs[0].Fields["cancelId"], evs[0].Fields["reason"], id, reason)
		}
	}
	if evs := byCommand["plan-new"]; len(evs) != 1 || evs[0].Subject != worker.SubjectCreated {
		t.Errorf("plan-new: terminal events %v, want one on %s", subjectsOf(evs), worker.SubjectCreated)
	}
	for _, p := range []string{"other-meeting", "other-tenant"} {
		if evs := byCommand[p]; len(evs) != 0 {
			t.Errorf("%s: ended while it waits: %s", p, evs[0].Subject)
		}
	}
	// After the cancel, the meeting's only calls are the new plan's: its
	// first (66620), and its probe's, which creates the groups.
	after, created := tenantCalls(sb, wt.Enterprise, meeting, cancelAt, time.Time{})
	if _, total := tenantCalls(sb, wt.Enterprise, meeting, time.Time{}, time.Time{}); after != first+1 || created != 1 || total != 1 {
		t.Errorf("after the cancel: %d calls for the meeting, %d created (%d created in all); want the new plan's %d", after, created, total, first+1)
	}
	if d := sb.Stats().DuplicateCreates; len(d) > 0 {
		t.Errorf("duplicate creates: %v", d)
	}
	t.Logf("cancel by meeting: %d of %d commands cancelled (answered in %v), %d cancel_rejected, %d calls after the cancel (the new plan's), other meeting and tenant untouched",
		subjectCount(t, js, subjectCancelled), len(plan), answeredAt.Sub(cancelAt).Round(10*time.Millisecond),
		subjectCount(t, js, worker.SubjectCancelRejected), after)
}
