package worker_test

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/xygroup/xygroup/worker"
	wt "github.com/xygroup/xygroup/worker/workertest"
	"github.com/xygroup/xygroup/xylink/sandbox"
)

// 2,000 commands for a meeting that starts 20 s later, with the shared consumer's
// MaxAckPending at 100: commands for a meeting in progress, published after them,
// complete while the 2,000 wait; after the start all 2,000 complete. The number
// of 66620 answers is bounded by coalescing (one probe per meeting at a time),
// not by 2,000 × attempts.
func TestParkedCommandsDoNotStallOthers(t *testing.T) {
	const waitingN, liveN = 2000, 20
	startIn := 20 * time.Second
	srv := wt.StartNATS(t)
	sb := wt.StartSandbox(t, sandbox.Config{Rate: 1e6})
	c := wt.Client(t, sb)
	startsAt := time.Now().Add(startIn)
	if _, err := sb.AddMeeting(sandbox.MeetingSpec{Number: "m-later", StartsAt: startsAt}); err != nil {
		t.Fatal(err)
	}
	var workers []*wt.Running
	for range 2 {
		workers = append(workers, wt.StartWorker(t, srv, c, worker.WithConcurrency(32), worker.WithRate(2000, nil),
			worker.WithStreams(worker.StreamSettings{MaxAckPending: 100}),
			worker.WithProbeBackoff(worker.Backoff{Initial: time.Second, Max: 4 * time.Second})))
	}
	js := wt.JetStream(t, wt.Connect(t, srv))
	publishAll(t, js, waitingN, func(i int) (string, []byte) {
		id := fmt.Sprintf("wait-%04d", i)
		return id, wt.Command(id, "m-later")
	})
	publishAll(t, js, liveN, func(i int) (string, []byte) {
		id := fmt.Sprintf("live-%02d", i)
		return id, wt.Command(id, "m-live-"+id)
	})

	events := wt.AwaitTerminal(t, js, waitingN+liveN, 3*time.Minute)
	var afterStart []time.Duration
	waitingEvents := 0
	for id, evs := range events {
		var terminal []wt.Event
		for _, e := range evs {
			if e.Terminal() {
				terminal = append(terminal, e)
			} else {
				waitingEvents++
			}
		}
		if len(terminal) != 1 {
			t.Fatalf("%s: %d terminal events", id, len(terminal))
		}
		at, _ := time.Parse(time.RFC3339Nano, terminal[0].Fields["occurredAt"].(string))
		if id[:4] == "live" {
			if terminal[0].Subject != worker.SubjectCreated || !at.Before(startsAt) {
				t.Errorf("%s: %s at %v, meeting start %v: live commands must complete while the others wait", id, terminal[0].Subject, at, startsAt)
			}
			continue
		}
		if !at.After(startsAt) {
			t.Errorf("%s completed at %v, before the meeting started", id, at)
		}
		afterStart = append(afterStart, at.Sub(startsAt))
	}
	st := sb.Stats()
	m, _ := sb.Meeting("m-later")
	if m.Creates != 1 || st.ByAnswer["66684"] != waitingN-1 {
		t.Fatalf("meeting created %d times; 66684 answers %d (want 1 and %d)", m.Creates, st.ByAnswer["66684"], waitingN-1)
	}
	if got := wt.TerminalCount(t, js); got != waitingN+liveN {
		t.Fatalf("%d terminal events, want %d", got, waitingN+liveN)
	}
	if waitingEvents > waitingN {
		t.Fatalf("%d waiting events for %d commands", waitingEvents, waitingN)
	}
	n66620 := st.ByAnswer["66620"]
	probes := 0.0
	for _, w := range workers {
		for _, r := range []string{"not_started", "answered", "ended", "no_news"} {
			probes += testutil.ToFloat64(w.Metrics().Probes.WithLabelValues(r))
		}
	}
	t.Logf("probes of the waiting meeting: %.0f in %v (backoff 1 s doubling to 4 s)", probes, startIn)
	// Coalesced: one first call per replica, then one probe at a time.
	if n66620 > int(probes)+len(workers) {
		t.Fatalf("%d answers 66620 for %d waiting commands and %.0f probes: not coalesced", n66620, waitingN, probes)
	}
	slices.Sort(afterStart)
	t.Logf("66620 answers: %d for %d commands waiting %v (%.1f per waiting minute); waiting events: %d",
		n66620, waitingN, startIn, float64(n66620)/startIn.Minutes(), waitingEvents)
	t.Logf("completion after the meeting started: p50 %v, p99 %v, last %v",
		afterStart[len(afterStart)/2].Round(time.Millisecond), afterStart[len(afterStart)*99/100].Round(time.Millisecond),
		afterStart[len(afterStart)-1].Round(time.Millisecond))
}

func publishAll(t *testing.T, js jetstream.JetStream, n int, next func(int) (string, []byte)) {
	t.Helper()
	wt.AwaitStream(t, js, worker.StreamCommands)
	for i := range n {
		id, body := next(i)
		m := nats.NewMsg(worker.SubjectCreate)
		m.Data, m.Header = body, nats.Header{nats.MsgIdHdr: []string{id}}
		if _, err := js.PublishMsgAsync(m); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(time.Minute):
		t.Fatal("async publishes not acknowledged")
	}
}
