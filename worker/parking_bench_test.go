package worker_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/xygroup/xygroup/worker"
	wt "github.com/xygroup/xygroup/worker/workertest"
	"github.com/xygroup/xygroup/xylink/sandbox"
)

// BenchmarkParking parks b.N commands spread over 100 meetings that start a
// minute later, with two workers and the default probe backoff (1 s doubling to
// 15 s), then lets the meetings start. It reports how fast commands park, the
// probes per waiting meeting per minute, and the completion latency after the
// meetings start (p50, p99).
//
//	go test -run '^$' -bench Parking -benchtime 20000x -timeout 30m ./worker/
func BenchmarkParking(b *testing.B) {
	const meetings = 100
	wait := time.Minute
	srv := wt.StartNATS(b)
	sb := wt.StartSandbox(b, sandbox.Config{Rate: 1e6})
	c := wt.Client(b, sb)
	startsAt := time.Now().Add(wait)
	for m := range meetings {
		if _, err := sb.AddMeeting(sandbox.MeetingSpec{Number: fmt.Sprintf("bm-%03d", m), StartsAt: startsAt}); err != nil {
			b.Fatal(err)
		}
	}
	var workers []*wt.Running
	for range 2 {
		workers = append(workers, wt.StartWorker(b, srv, c, worker.WithConcurrency(32), worker.WithRate(1e6, nil),
			worker.WithStreams(worker.StreamSettings{MaxAckPending: 100}),
			worker.WithProbeBackoff(worker.Backoff{Initial: time.Second, Max: 15 * time.Second})))
	}
	js := wt.JetStream(b, wt.Connect(b, srv))
	wt.AwaitStream(b, js, worker.StreamCommands)
	b.ResetTimer()
	parkStart := time.Now()
	for i := range b.N {
		id := fmt.Sprintf("bp-%06d", i)
		publishTo(b, js, id, fmt.Sprintf("bm-%03d", i%meetings))
	}
	<-js.PublishAsyncComplete()
	// Parked: every command has its waiting event.
	for {
		n := 0
		if ms, err := worker.ParkedMeetings(context.Background(), js); err == nil {
			for _, m := range ms {
				n += int(m.Parked)
			}
		}
		if n >= b.N {
			break
		}
		if time.Now().After(startsAt) {
			b.Fatalf("only %d of %d commands parked before the meetings started", n, b.N)
		}
		time.Sleep(100 * time.Millisecond)
	}
	parkTook := time.Since(parkStart)
	b.StopTimer()
	time.Sleep(time.Until(startsAt)) // the meetings start at a fixed time: nothing to await but the clock
	probesWhileWaiting := 0.0
	for _, w := range workers {
		probesWhileWaiting += testutil.ToFloat64(w.Metrics().Probes.WithLabelValues("not_started"))
	}
	events := wt.AwaitTerminal(b, js, b.N, 10*time.Minute)
	var after []time.Duration
	for _, evs := range events {
		for _, e := range evs {
			if e.Terminal() {
				at, _ := time.Parse(time.RFC3339Nano, e.Fields["occurredAt"].(string))
				after = append(after, at.Sub(startsAt))
			}
		}
	}
	slices.Sort(after)
	waitedMinutes := startsAt.Sub(parkStart).Minutes()
	b.ReportMetric(float64(b.N)/parkTook.Seconds(), "parked/s")
	b.ReportMetric(probesWhileWaiting/meetings/waitedMinutes, "probes/meeting/min")
	b.ReportMetric(float64(sb.Stats().ByAnswer["66620"]), "66620-answers")
	b.ReportMetric(after[len(after)/2].Seconds(), "p50-s-after-start")
	b.ReportMetric(after[len(after)*99/100].Seconds(), "p99-s-after-start")
	b.ReportMetric(0, "ns/op")
}
