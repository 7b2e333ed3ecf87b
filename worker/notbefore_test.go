package worker_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/xygroup/xygroup/worker"
	wt "github.com/xygroup/xygroup/worker/workertest"
	"github.com/xygroup/xygroup/xylink/sandbox"
)

// callTimes returns the times of the API's create calls for meeting.
func callTimes(sb *sandbox.Server, meeting string) []time.Time {
	var at []time.Time
	for _, r := range sb.Requests() {
		if r.Endpoint == "dynamicGroup" && r.Meeting == meeting {
			at = append(at, r.At)
		}
	}
	return at
}

// A command scheduled further ahead than the maximum wait: its deadline counts
// from its notBefore, not from its arrival. It is not called before notBefore,
// and then it is called and succeeds; its waiting event names notBefore as its
// next attempt and notBefore plus the maximum wait as its deadline.
func TestNotBeforeFurtherAheadThanMaxWait(t *testing.T) {
	const meeting, maxWait = "m-scheduled-ahead", 4 * time.Second
	srv := wt.StartNATS(t)
	sb := wt.StartSandbox(t, sandbox.Config{Rate: 1e6})
	if _, err := sb.AddMeeting(sandbox.MeetingSpec{Number: meeting}); err != nil {
		t.Fatal(err)
	}
	wt.StartWorker(t, srv, wt.Client(t, sb), worker.WithMaxWait(maxWait))
	js := wt.JetStream(t, wt.Connect(t, srv))
	notBefore := time.Now().Add(2 * maxWait).UTC().Truncate(time.Millisecond)
	wt.Publish(t, js, "ahead", wt.Command("ahead", meeting, "notBefore", fmt.Sprintf("%q", notBefore.Format(time.RFC3339Nano))))

	evs := wt.AwaitTerminal(t, js, 1, time.Minute)["ahead"]
	var waiting, terminal []wt.Event
	for _, e := range evs {
		if e.Terminal() {
			terminal = append(terminal, e)
		} else {
			waiting = append(waiting, e)
		}
	}
	if len(terminal) != 1 || terminal[0].Subject != worker.SubjectCreated {
		t.Fatalf("terminal events %v, want one on %s", evs, worker.SubjectCreated)
	}
	calls := callTimes(sb, meeting)
	if len(calls) == 0 {
		t.Fatal("the API saw no call")
	}
	for _, at := range calls {
		if at.Before(notBefore) {
			t.Errorf("called at %s, before notBefore %s", at.Format(time.RFC3339Nano), notBefore.Format(time.RFC3339Nano))
		}
	}
	if len(waiting) != 1 {
		t.Fatalf("%d waiting events, want 1: %v", len(waiting), evs)
	}
	next, _ := time.Parse(time.RFC3339Nano, fmt.Sprint(waiting[0].Fields["nextAttemptAt"]))
	deadline, _ := time.Parse(time.RFC3339Nano, fmt.Sprint(waiting[0].Fields["deadline"]))
	if !next.Equal(notBefore) {
		t.Errorf("waiting event: nextAttemptAt %s, want notBefore %s", next, notBefore)
	}
	if !deadline.Equal(notBefore.Add(maxWait)) {
		t.Errorf("waiting event: deadline %s, want notBefore plus the maximum wait %s", deadline, notBefore.Add(maxWait))
	}
}

// A meeting that starts after a parked command's maximum wait from its
// arrival, but before that command's notBefore: the command is not failed for
// waiting (its deadline counts from notBefore), is not called when the meeting
// is released (its notBefore is still ahead), and once notBefore passed it is
// called. The meeting's first command waits by its own deadline.
func TestReleasedMeetingWithLaterNotBefore(t *testing.T) {
	const meeting, maxWait = "m-released-later", 6 * time.Second
	srv := wt.StartNATS(t)
	sb := wt.StartSandbox(t, sandbox.Config{Rate: 1e6})
	if _, err := sb.AddMeeting(sandbox.MeetingSpec{Number: meeting, StartsIn: sandbox.Duration(maxWait * 3 / 2)}); err != nil {
		t.Fatal(err)
	}
	wt.StartWorker(t, srv, wt.Client(t, sb), worker.WithMaxWait(maxWait),
		worker.WithProbeBackoff(worker.Backoff{Initial: 100 * time.Millisecond, Max: 300 * time.Millisecond}))
	js := wt.JetStream(t, wt.Connect(t, srv))

	hour := fmt.Sprintf("%q", time.Now().Add(time.Hour).UTC().Format(time.RFC3339))
	wt.Publish(t, js, "first", wt.Command("first", meeting, "deadline", hour))
	awaitParked(t, js, 1) // the meeting answered 66620: it waits
	notBefore := time.Now().Add(3 * maxWait).UTC().Truncate(time.Millisecond)
	wt.Publish(t, js, "later", wt.Command("later", meeting, "notBefore", fmt.Sprintf("%q", notBefore.Format(time.RFC3339Nano))))
	awaitParked(t, js, 2)

	evs := wt.AwaitTerminal(t, js, 2, 2*time.Minute)
	if e := terminalOf(t, evs["first"]); e.Subject != worker.SubjectCreated {
		t.Errorf("first: ended on %s: %s", e.Subject, e.Data)
	}
	// The groups are open when it comes: the meeting answered it.
	if e := terminalOf(t, evs["later"]); e.Subject != worker.SubjectFailed+".already_open" {
		t.Errorf("later: ended on %s: %s", e.Subject, e.Data)
	}
	// Parked in a meeting probed every few hundred milliseconds, it waits for
	// its notBefore all the same, and its waiting event says so.
	for _, e := range evs["later"] {
		if e.Terminal() {
			continue
		}
		next, _ := time.Parse(time.RFC3339Nano, fmt.Sprint(e.Fields["nextAttemptAt"]))
		deadline, _ := time.Parse(time.RFC3339Nano, fmt.Sprint(e.Fields["deadline"]))
		if !next.Equal(notBefore) || !deadline.Equal(notBefore.Add(maxWait)) {
			t.Errorf("later: waiting event with nextAttemptAt %s and deadline %s, want %s and %s", next, deadline, notBefore, notBefore.Add(maxWait))
		}
	}
	var after int
	calls := callTimes(sb, meeting)
	for _, at := range calls {
		if !at.Before(notBefore) {
			after++
		}
	}
	// "first" is called before it (66620, then created); "later" only after it.
	if after != 1 {
		t.Errorf("%d calls at or after notBefore %s, want 1 (the later command's); calls at %v", after, notBefore, calls)
	}
}

// terminalOf is the one terminal event among evs.
func terminalOf(t *testing.T, evs []wt.Event) wt.Event {
	t.Helper()
	var terminal []wt.Event
	for _, e := range evs {
		if e.Terminal() {
			terminal = append(terminal, e)
		}
	}
	if len(terminal) != 1 {
		t.Fatalf("%d terminal events: %v", len(terminal), evs)
	}
	return terminal[0]
}

// A command scheduled ahead for a meeting that is in progress now does not make
// the meeting's other commands wait for its notBefore: nothing said the meeting
// waits. A command without notBefore for it is called at once and created;
// the scheduled one is called after its notBefore.
func TestNotBeforeDoesNotHoldTheMeetingsOtherCommands(t *testing.T) {
	const meeting, maxWait = "m-in-progress", 4 * time.Second
	srv := wt.StartNATS(t)
	sb := wt.StartSandbox(t, sandbox.Config{Rate: 1e6})
	if _, err := sb.AddMeeting(sandbox.MeetingSpec{Number: meeting}); err != nil {
		t.Fatal(err)
	}
	wt.StartWorker(t, srv, wt.Client(t, sb), worker.WithMaxWait(maxWait))
	js := wt.JetStream(t, wt.Connect(t, srv))
	notBefore := time.Now().Add(4 * maxWait).UTC().Truncate(time.Millisecond)
	wt.Publish(t, js, "tomorrow", wt.Command("tomorrow", meeting, "notBefore", fmt.Sprintf("%q", notBefore.Format(time.RFC3339Nano))))
	awaitParked(t, js, 1)
	wt.Publish(t, js, "today", wt.Command("today", meeting))

	evs := wt.AwaitTerminal(t, js, 1, time.Minute)
	if e := terminalOf(t, evs["today"]); e.Subject != worker.SubjectCreated {
		t.Fatalf("today: ended on %s: %s", e.Subject, e.Data)
	}
	if calls := callTimes(sb, meeting); len(calls) != 1 || !calls[0].Before(notBefore) {
		t.Fatalf("calls at %v; want one, before the other command's notBefore %s", calls, notBefore)
	}
	evs = wt.AwaitTerminal(t, js, 2, time.Minute)
	if e := terminalOf(t, evs["tomorrow"]); e.Subject != worker.SubjectFailed+".already_open" {
		t.Errorf("tomorrow: ended on %s: %s", e.Subject, e.Data)
	}
	if calls := callTimes(sb, meeting); len(calls) != 2 || calls[1].Before(notBefore) {
		t.Errorf("calls at %v; want the second at or after notBefore %s", calls, notBefore)
	}
}
