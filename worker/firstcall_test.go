package worker_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/rs/zerolog"

	"github.com/xygroup/xygroup/worker"
	"github.com/xygroup/xygroup/worker/ratelimit"
	wt "github.com/xygroup/xygroup/worker/workertest"
	"github.com/xygroup/xygroup/xylink/sandbox"
)

// Two commands for a meeting that has not started reach two replicas at once
// and wait for their grants (1 a second). The first one's 66620 parks the
// meeting; the second, granted a second later on the other replica, sees the
// meeting waiting and parks without a call: one 66620 for the meeting, not
// one per replica.
func TestBurstAcrossReplicasCostsOneFirstCall(t *testing.T) {
	srv := wt.StartNATS(t)
	sb := wt.StartSandbox(t, sandbox.Config{Rate: 1e6})
	c := wt.Client(t, sb)
	if _, err := sb.AddMeeting(sandbox.MeetingSpec{Number: "m-burst", StartsAt: time.Now().Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	var workers []*wt.Running
	var logs [2]wt.SyncBuffer
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("A:\n%s\nB:\n%s", logs[0].String(), logs[1].String())
		}
	})
	for i := range 2 {
		// One slot each: the second command goes to the replica that does
		// not hold the first.
		workers = append(workers, wt.StartWorker(t, srv, c, worker.WithConcurrency(1), worker.WithRate(1, nil),
			worker.WithProbeBackoff(worker.Backoff{Initial: time.Hour, Max: time.Hour}), worker.WithLogger(zerolog.New(&logs[i]).Level(zerolog.DebugLevel))))
	}
	// Other clients keep the enterprise's grant queue busy, so that both
	// commands are held, one on each replica, before either is granted. Each
	// client spaces its own grants a second apart; with eight of them asking
	// all the time, a command waits behind several seconds of grants.
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	const others = 8
	var granted [others]atomic.Int64
	for i := range others {
		other, err := ratelimit.NewCluster(ctx, wt.Connect(t, srv), ratelimit.Options{Name: fmt.Sprintf("other-%d", i), Rate: func(string) float64 { return 1 }})
		if err != nil {
			t.Fatal(err)
		}
		go func() {
			for other.Wait(ctx, wt.Enterprise, ratelimit.Live) == nil {
				granted[i].Add(1)
			}
		}()
	}
	// Every client granted once: each is asking again, the queue is full.
	wt.Eventually(t, time.Minute, func() bool {
		for i := range granted {
			if granted[i].Load() == 0 {
				return false
			}
		}
		return true
	}, "every other client granted")
	inFlight := func() (n float64) {
		for _, w := range workers {
			n += testutil.ToFloat64(w.Metrics().InFlight)
		}
		return n
	}
	js := wt.JetStream(t, wt.Connect(t, srv))
	for i, id := range []string{"burst-a", "burst-b"} {
		wt.Publish(t, js, id, wt.Command(id, "m-burst"))
		wt.Eventually(t, 30*time.Second, func() bool { return inFlight() == float64(i+1) }, "commands held")
	}
	stop()
	wt.AwaitConsumerIdle(t, js, time.Minute) // both parked
	foundWaiting := 0.0
	for _, w := range workers {
		foundWaiting += testutil.ToFloat64(w.Metrics().Retries.WithLabelValues("meeting_waiting"))
	}
	n := sb.Stats().ByAnswer["66620"]
	t.Logf("66620 answers %d; grants not used because the meeting was found waiting: %.0f", n, foundWaiting)
	if n != 1 {
		t.Fatalf("%d answers 66620 for one meeting", n)
	}
	if foundWaiting != 1 {
		t.Fatalf("%.0f grants not used for a meeting found waiting, want 1", foundWaiting)
	}
}
