package e2e

import (
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/xygroup/xygroup/xylink/sandbox"
)

// Cancelling waiting meetings' commands with `xygroup cancel`. 40 meetings
// (200 with -long) start 30 s from now (60 s), each with one command, parked
// after its first call (66620). Before they start, half are cancelled through
// the binary with --wait, a quarter by commandId and a quarter by meeting;
// then the meetings start. Shown, per the figures printed:
//   - every cancel is answered, and a cancelled command ends failed.cancelled
//     (one terminal event: Check);
//   - no call for a cancelled meeting reaches the API after its cancel was
//     answered, and none of them is created;
//   - the other half is created once the meetings start.
//
// A cancel that meets its command's probe at the API is answered in_flight
// and the command ends as its call says: that is the contract, so such a
// command may end either way; it must have had a call then, and it is counted.
func TestCancelWaitingMeetings(t *testing.T) {
	h := New(t, Options{Nodes: 1, Workers: 3, Seed: 17})
	n := pick(40, 200)
	startsIn := pick(20*time.Second, 60*time.Second)
	cmds := Commands("cancel", "", n)
	for _, c := range cmds {
		if _, err := h.Sandbox.AddMeeting(sandbox.MeetingSpec{Number: c.Meeting, StartsIn: sandbox.Duration(startsIn)}); err != nil {
			t.Fatal(err)
		}
	}
	startAt := time.Now().Add(startsIn)
	h.Publish(cmds)
	cmds = h.Commands // the check's own list: each cancelled command's outcome is set there
	if !until(startsIn/2, 100*time.Millisecond, func() bool { return waitingEvents(h) >= n }) {
		t.Fatalf("only %d of %d commands parked in %v", waitingEvents(h), n, startsIn/2)
	}

	// Half are cancelled, a few at a time, as operators would.
	type result struct {
		byMeeting      bool
		stdout, stderr string
		code           int
		took           time.Duration
	}
	results := map[int]*result{}
	var (
		mu  sync.Mutex
		wg  sync.WaitGroup
		sem = make(chan struct{}, 4)
	)
	cancelsFrom := time.Now()
	for i := 0; i < n; i += 2 {
		c := cmds[i]
		r := &result{byMeeting: i%4 == 2}
		args := []string{"cancel", "--command", c.ID, "--reason", "plan changed", "--wait", "--timeout", "30s"}
		if r.byMeeting {
			args = []string{"cancel", "--meeting", c.Meeting, "--reason", "meeting moved", "--wait", "--timeout", "30s", "--window", "500ms"}
		}
		results[i] = r
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			start := time.Now()
			out, errOut, code := h.Run(time.Minute, args...)
			mu.Lock()
			r.stdout, r.stderr, r.code, r.took = out, errOut, code, time.Since(start)
			mu.Unlock()
		})
	}
	wg.Wait()
	cancelsDone := time.Now()

	// What each cancel printed: the command's failed.cancelled event, or a
	// cancel_rejected answer.
	cancelled, inFlight, byCommand, byMeeting := map[string]bool{}, map[string]string{}, 0, 0
	var slowest time.Duration
	for i, r := range results {
		c := &cmds[i]
		if r.byMeeting {
			byMeeting++
		} else {
			byCommand++
		}
		slowest = max(slowest, r.took)
		var outcomes []string
		for line := range strings.Lines(r.stdout) {
			var ev struct {
				CommandID string `json:"commandId"`
				Class     string `json:"class"`
				Reason    string `json:"reason"`
			}
			if err := json.Unmarshal([]byte(line), &ev); err != nil {
				t.Errorf("cancel of %s printed a line that is not JSON: %q", c.ID, line)
				continue
			}
			if ev.CommandID != c.ID {
				t.Errorf("cancel of %s printed an outcome of %s", c.ID, ev.CommandID)
				continue
			}
			switch {
			case ev.Class == "cancelled":
				cancelled[c.ID] = true
				outcomes = append(outcomes, "cancelled")
			case ev.Reason == "in_flight" || ev.Reason == "already_sent":
				inFlight[c.ID] = ev.Reason
				outcomes = append(outcomes, "rejected "+ev.Reason)
			default:
				outcomes = append(outcomes, "rejected "+ev.Reason)
			}
		}
		switch {
		case len(outcomes) != 1:
			t.Errorf("cancel of %s (by meeting: %v): outcomes %v, exit %d, want one; stderr: %s", c.ID, r.byMeeting, outcomes, r.code, r.stderr)
		case cancelled[c.ID] && r.code == 0:
			c.Want = "failed.cancelled"
		case inFlight[c.ID] != "" && r.code == 1:
			c.Want = "" // it ends as its call says
		default:
			t.Errorf("cancel of %s (by meeting: %v): %v, exit %d; stderr: %s", c.ID, r.byMeeting, outcomes, r.code, r.stderr)
		}
	}

	ids := IDs(cmds)
	h.Events.AwaitEnded(ids, pick(2*time.Minute, 5*time.Minute))

	// The API: nothing for a cancelled meeting after its cancel was answered
	// (its failed.cancelled event stored); a rejected one had a call then.
	answered := map[string]time.Time{}
	meetingOf := map[string]string{}
	for _, c := range cmds {
		meetingOf[c.Meeting] = c.ID
	}
	for _, e := range h.Events.Events() {
		if e.Subject == SubjectFailedPf+"cancelled" {
			answered[e.CommandID()] = e.Stored
		}
	}
	callsAfter, callsBefore := 0, 0
	sentBefore := map[string]bool{}
	for _, a := range h.Proxy.Arrivals() {
		id := meetingOf[a.Meeting]
		if at, ok := answered[id]; ok && cancelled[id] {
			if a.Sent.After(at) {
				callsAfter++
				t.Errorf("%s: a call for its meeting at %s, after its cancel was answered at %s", id,
					a.Sent.Format("15:04:05.000"), at.Format("15:04:05.000"))
			} else {
				callsBefore++
			}
		}
		if a.Sent.Before(cancelsDone) {
			sentBefore[id] = true
		}
	}
	for id := range inFlight {
		if !sentBefore[id] {
			t.Errorf("%s: its cancel was answered %s, yet no call for its meeting reached the API before", id, inFlight[id])
		}
	}
	createdCancelled := 0
	for _, r := range h.Sandbox.Requests() {
		if id := meetingOf[r.Meeting]; r.Endpoint == "dynamicGroup" && r.Status == 200 && cancelled[id] {
			createdCancelled++
		}
	}
	if createdCancelled > 0 {
		t.Errorf("%d cancelled meetings had their groups created", createdCancelled)
	}
	if len(cancelled)+len(inFlight) != len(results) {
		t.Errorf("%d of %d cancels answered", len(cancelled)+len(inFlight), len(results))
	}
	early := "before"
	if cancelsDone.After(startAt) {
		early = "AFTER"
	}
	h.Note("CANCEL: %d waiting meetings; %d cancels by commandId and %d by meeting with `xygroup cancel --wait` in %v (slowest %v), done %v %s the meetings start",
		n, byCommand, byMeeting, cancelsDone.Sub(cancelsFrom).Round(100*time.Millisecond), slowest.Round(10*time.Millisecond),
		startAt.Sub(cancelsDone).Abs().Round(100*time.Millisecond), early)
	h.Note("CANCEL: %d cancelled, %d rejected (a call at the API then); calls for cancelled meetings: %d before their cancel was answered, %d after; groups created for them: %d",
		len(cancelled), len(inFlight), callsBefore, callsAfter, createdCancelled)
	r := h.Check(time.Minute)
	if want := n - len(cancelled); r.Created != want {
		t.Errorf("%d created, want the %d commands not cancelled", r.Created, want)
	}
}
