package e2e

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/xygroup/xygroup/xylink/sandbox"
)

// SIGTERM of the replica that is probing a meeting that has not started (the
// probe is held on its way to the API); the meeting starts right after. The
// meeting's commands must be created within a bound after the start: the
// longest probe interval (15 s) plus slack, not the minute of a claim the
// stopped replica left behind.
func TestSIGTERMWhileProbing(t *testing.T) {
	knownFailure(t)
	h := New(t, Options{Nodes: 1, Workers: 3, Seed: 6})
	const meetings = 3
	var cmds []Command
	for i := range meetings {
		c := NewCommand(fmt.Sprintf("probe-%d", i), "", meetingNumber("probe", i))
		if _, err := h.Sandbox.AddMeeting(sandbox.MeetingSpec{Number: c.Meeting, StartsIn: sandbox.Duration(time.Hour)}); err != nil {
			t.Fatal(err)
		}
		cmds = append(cmds, c)
	}
	h.Publish(cmds)
	// Wait for every command to be parked, then hold the next probe of the
	// first meeting on its way in and stop the replica that sent it.
	if !until(time.Minute, 100*time.Millisecond, func() bool { return waitingEvents(h) >= meetings }) {
		t.Fatalf("only %d of %d commands parked", waitingEvents(h), meetings)
	}
	var (
		mu     sync.Mutex
		prober *Worker
		caught = make(chan struct{})
		once   sync.Once
	)
	h.Proxy.SetFaults(Faults{InLatency: 3 * time.Second})
	h.Proxy.Watch(func(remote, meeting string) {
		if meeting != cmds[0].Meeting {
			return
		}
		// A connection whose owner cannot be told (gone meanwhile) is passed
		// over: the meeting's next probe comes a moment later.
		w := h.WorkerAt(remote)
		if w == nil {
			return
		}
		once.Do(func() {
			mu.Lock()
			prober = w
			mu.Unlock()
			close(caught)
		})
	})
	select {
	case <-caught:
	case <-time.After(time.Minute):
		t.Fatal("no probe of the waiting meeting within a minute")
	}
	mu.Lock()
	w := prober
	mu.Unlock()
	if w == nil {
		t.Fatal("could not tell which worker sent the probe")
	}
	w.Terminate()
	for _, c := range cmds {
		h.Sandbox.StartMeeting(c.Meeting)
	}
	started := time.Now()
	h.Proxy.SetFaults(Faults{})
	h.Proxy.Watch(nil)
	bound := 15*time.Second + 10*time.Second
	ids := IDs(cmds)
	h.Events.AwaitEnded(ids, 2*time.Minute)
	var worst time.Duration
	for _, c := range cmds {
		if m, ok := h.Sandbox.Meeting(c.Meeting); ok && m.FirstSuccessAt != nil {
			worst = max(worst, m.FirstSuccessAt.Sub(started))
		} else {
			worst = max(worst, time.Since(started))
		}
	}
	code := -2
	if ok, c := w.Wait(30 * time.Second); ok {
		code = c
	}
	h.Note("worker %d stopped (SIGTERM) while probing, exit code %d; meetings started; the last was created %v after the start (bound %v)",
		w.Index, code, worst.Round(100*time.Millisecond), bound)
	h.Check(time.Minute)
	if worst > bound {
		t.Errorf("the meetings' commands were created %v after the start, bound %v", worst.Round(100*time.Millisecond), bound)
	}
	if code != 0 {
		t.Errorf("the SIGTERM'd worker exited %d, want 0", code)
	}
}

func waitingEvents(h *Harness) int {
	n := 0
	for _, e := range h.Events.Events() {
		if e.Subject == SubjectWaiting {
			n++
		}
	}
	return n
}

// Many meetings waiting to start (scheduled ahead in the sandbox) while live
// commands arrive: the live commands are created while the meetings wait, and
// once the meetings start their commands are created too. MaxAckPending is
// lowered to 50 so that waiting commands holding ack-pending slots would stall
// the live ones.
func TestWaitingMeetingsDoNotStallLive(t *testing.T) {
	knownFailure(t)
	h := New(t, Options{Nodes: 1, Workers: 3, Seed: 14, WorkerEnv: map[string]string{"XYGROUP_MAX_ACK_PENDING": "50"}})
	waiting := Commands("scheduled", "", pick(60, 1000))
	for _, c := range waiting {
		if _, err := h.Sandbox.AddMeeting(sandbox.MeetingSpec{Number: c.Meeting, StartsIn: sandbox.Duration(time.Hour)}); err != nil {
			t.Fatal(err)
		}
	}
	live := Commands("live", "", pick(120, 1500))
	h.Publish(waiting)
	h.Publish(live)
	ended := h.Events.AwaitEnded(IDs(live), pick(2*time.Minute, 8*time.Minute))
	liveDone := time.Now()
	parked := waitingEvents(h)
	answers := h.Sandbox.Stats().ByAnswer["66620"]
	h.Note("%d of %d live commands ended while %d meetings waited (%d waiting events, %d answers 66620 so far, %.1f live created/s)",
		ended, len(live), len(waiting), parked, answers, rate(ended, liveDone.Sub(h.Started)))
	if ended < len(live) {
		t.Errorf("only %d of %d live commands ended while meetings waited", ended, len(live))
	}
	if waitedEnded := h.Events.Ended(IDs(waiting)); waitedEnded > 0 {
		t.Errorf("%d commands of meetings that have not started ended", waitedEnded)
	}
	for _, c := range waiting {
		h.Sandbox.StartMeeting(c.Meeting)
	}
	h.Check(pick(2*time.Minute, 6*time.Minute))
}
