package worker_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/xygroup/xygroup/worker"
	"github.com/xygroup/xygroup/worker/ratelimit"
	wt "github.com/xygroup/xygroup/worker/workertest"
	"github.com/xygroup/xygroup/xylink/sandbox"
)

// farRun is a run of n commands through a worker whose NATS is behind a
// relay (oneWay each way; every grant, mark and event crosses it) and,
// with near, a second worker next to NATS. The dispenser runs next to NATS,
// elected before the workers start. during runs once a third of the
// commands have ended (a change of the relay's latency). It returns the
// sandbox's figures for the tenant and the created rate between the first
// and the last request's arrival.
func farRun(t *testing.T, n int, oneWay time.Duration, near bool, during func(*wt.Relay)) (sandbox.EnterpriseStats, map[string]int, float64) {
	t.Helper()
	srv := wt.StartNATS(t)
	sb := wt.StartSandbox(t, sandbox.Config{Rate: 20})
	c := wt.Client(t, sb)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	disp, err := ratelimit.NewCluster(ctx, wt.Connect(t, srv), ratelimit.Options{Name: "dispenser"})
	if err != nil {
		t.Fatal(err)
	}
	wt.Eventually(t, 10*time.Second, func() bool { return disp.Stats().Dispensing }, "a dispenser elected")

	relay := wt.StartRelay(t, srv)
	relay.SetLatency(oneWay, oneWay)
	far, err := nats.Connect(relay.URL(), nats.Name("far-replica"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(far.Close)
	wt.StartWorkerOn(t, far, c, worker.WithRate(20, nil), worker.WithConcurrency(16))
	if near {
		wt.StartWorker(t, srv, c, worker.WithRate(20, nil), worker.WithConcurrency(16))
	}
	js := wt.JetStream(t, wt.Connect(t, srv))
	wt.AwaitStream(t, js, worker.StreamCommands)
	for i := range n {
		id := fmt.Sprintf("far-%03d", i)
		wt.Publish(t, js, id, wt.Command(id, "m-"+id))
	}
	if during != nil {
		wt.AwaitTerminal(t, js, n/3, 3*time.Minute)
		during(relay)
	}
	wt.AwaitTerminal(t, js, n, 3*time.Minute)
	st := sb.Stats()
	var at []time.Time
	for _, r := range sb.Requests() {
		if r.Endpoint == "dynamicGroup" && r.Status == 200 {
			at = append(at, r.At)
		}
	}
	slices.SortFunc(at, func(a, b time.Time) int { return a.Compare(b) })
	rate := 0.0
	if len(at) > 1 {
		rate = float64(len(at)-1) / at[len(at)-1].Sub(at[0]).Seconds()
	}
	return st.Enterprises[wt.Enterprise], st.ByAnswer, rate
}

// reportLimit logs a run's figures and fails when a second at the API held
// more than 20 requests or one was answered 429.
func reportLimit(t *testing.T, what string, e sandbox.EnterpriseStats, answers map[string]int, rate float64) {
	t.Helper()
	t.Logf("%s: %d requests, %.1f created/s, max %d in a sliding second (limit 20); answers %v",
		what, e.Requests, rate, e.MaxInWindow, answers)
	if e.MaxInWindow > 20 || answers["429"] > 0 {
		t.Fatalf("the limit broke: %d requests in one sliding second, %d answered 429", e.MaxInWindow, answers["429"])
	}
}

// One replica 15 ms from NATS each way (another zone), alone: its grants come
// 15 ms after their decision and its "sent" marks take 30 ms. It learns that
// lead, the dispenser grants that much before each departure, and the
// replica keeps the rate: no grant is spent unused for a mark of the usual
// length, and no second at the API holds more than 20.
func TestFarReplicaAloneKeepsTheRate(t *testing.T) {
	e, answers, rate := farRun(t, 200, 15*time.Millisecond, false, nil)
	reportLimit(t, "replica 15 ms from NATS", e, answers, rate)
	// 19.5/s on an idle machine; a replica whose grants are all spent
	// unused creates nothing. The floor leaves room for a loaded one.
	if rate < 10 {
		t.Fatalf("a replica 15 ms from NATS created %.1f/s: its grants are spent unused", rate)
	}
}

// A replica 15 ms from NATS each way beside one next to it: the far one's
// calls leave on the departures the dispenser spaced, like the near one's.
func TestReplicaFartherFromNATSKeepsTheRate(t *testing.T) {
	e, answers, rate := farRun(t, 300, 15*time.Millisecond, true, nil)
	reportLimit(t, "replicas 15 ms and 0 ms from NATS", e, answers, rate)
	if rate < 10 {
		t.Fatalf("created %.1f/s", rate)
	}
}

// The far replica's link is slow (60 ms each way) for the first third of the
// run, then recovers: its lead, learned in the slow phase, is too long for a
// while, and its grants come early. They are held until their departure, so
// no second at the API holds more than 20.
func TestLinkRecoveredAfterASlowPhaseKeepsTheLimit(t *testing.T) {
	e, answers, rate := farRun(t, 240, 60*time.Millisecond, true, func(r *wt.Relay) { r.SetLatency(0, 0) })
	reportLimit(t, "slow phase then recovery", e, answers, rate)
}
