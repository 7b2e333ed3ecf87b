package worker_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/xygroup/xygroup/worker"
	"github.com/xygroup/xygroup/worker/ratelimit"
	wt "github.com/xygroup/xygroup/worker/workertest"
	"github.com/xygroup/xygroup/xylink/sandbox"
)

// One replica 10 ms from NATS each way, another next to it: the far one gets
// a grant 10 ms late and takes 20 ms for its "sent" mark, so its calls leave
// about 30 ms after their grants, the near one's about 1 ms after. The
// dispenser's guard absorbs 23 ms of such difference; the far replica's
// requests say their lead, and the dispenser spaces departures, not grants:
// no second at the API holds more than 20, and no 429.
func TestReplicaFartherFromNATSKeepsTheRate(t *testing.T) {
	srv := wt.StartNATS(t)
	sb := wt.StartSandbox(t, sandbox.Config{Rate: 20})
	c := wt.Client(t, sb)

	// The dispenser: next to NATS, elected before the workers start.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	disp, err := ratelimit.NewCluster(ctx, wt.Connect(t, srv), ratelimit.Options{Name: "dispenser"})
	if err != nil {
		t.Fatal(err)
	}
	wt.Eventually(t, 10*time.Second, func() bool { return disp.Stats().Dispensing }, "a dispenser elected")

	relay := wt.StartRelay(t, srv)
	relay.SetLatency(10*time.Millisecond, 10*time.Millisecond)
	far, err := nats.Connect(relay.URL(), nats.Name("far-replica"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(far.Close)
	wt.StartWorkerOn(t, far, c, worker.WithRate(20, nil), worker.WithConcurrency(8))
	wt.StartWorker(t, srv, c, worker.WithRate(20, nil), worker.WithConcurrency(8))

	js := wt.JetStream(t, wt.Connect(t, srv))
	wt.AwaitStream(t, js, worker.StreamCommands)
	const n = 300
	for i := range n {
		id := fmt.Sprintf("far-%03d", i)
		wt.Publish(t, js, id, wt.Command(id, "m-"+id))
	}
	wt.AwaitTerminal(t, js, n, 3*time.Minute)
	st := sb.Stats()
	e := st.Enterprises[wt.Enterprise]
	t.Logf("%d requests: max %d in a sliding second (limit 20); answers %v", e.Requests, e.MaxInWindow, st.ByAnswer)
	if e.MaxInWindow > 20 || st.ByAnswer["429"] > 0 {
		t.Fatalf("the limit broke: %d requests in one sliding second, %d answered 429", e.MaxInWindow, st.ByAnswer["429"])
	}
}
