package worker_test

import (
	"context"
	"fmt"
	"net/http"
	"runtime"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/xygroup/xygroup/worker"
	"github.com/xygroup/xygroup/worker/embedded"
	"github.com/xygroup/xygroup/worker/ratelimit"
	wt "github.com/xygroup/xygroup/worker/workertest"
	"github.com/xygroup/xygroup/xylink"
	"github.com/xygroup/xygroup/xylink/sandbox"
)

// Commands naming enterprises that are not configured, with large ids, leave
// no per-enterprise state in the replica: each ends invalid, and the state
// of a configured tenant's commands is gone once they are done.
func TestLaneStateOnlyForConfiguredTenants(t *testing.T) {
	const ghosts, idBytes, known = 2000, 10 << 10, 20
	srv := wt.StartNATS(t)
	sb := wt.StartSandbox(t, sandbox.Config{Rate: 1e6})
	js := wt.JetStream(t, wt.Connect(t, srv))
	w := wt.StartWorker(t, srv, wt.Client(t, sb), worker.WithConcurrency(64))
	wt.AwaitStream(t, js, worker.StreamCommands)
	wt.AwaitStream(t, js, worker.StreamEvents)
	before := heapInUse()
	for i := range ghosts {
		id := fmt.Sprintf("ghost-%04d", i)
		ent := fmt.Sprintf("%q", fmt.Sprintf("made-up-%04d-", i)+strings.Repeat("x", idBytes))
		wt.Publish(t, js, id, wt.Command(id, "m-"+id, "enterpriseId", ent))
	}
	for i := range known {
		id := fmt.Sprintf("known-%02d", i)
		wt.Publish(t, js, id, wt.Command(id, "m-"+id))
	}
	events := wt.AwaitTerminal(t, js, ghosts+known, 3*time.Minute)
	for id, evs := range events {
		want := worker.SubjectCreated
		if strings.HasPrefix(id, "ghost-") {
			want = worker.SubjectFailed + ".invalid_command"
		}
		if len(evs) != 1 || evs[0].Subject != want {
			t.Errorf("%s: %d events, first on %s, want one on %s", id, len(evs), evs[0].Subject, want)
		}
	}
	// The handlers' last steps (acks, turns) follow the events.
	wt.Eventually(t, 30*time.Second, func() bool {
		a, b, c, d := worker.LaneStateSizes(w.Worker)
		return a+b+c+d == 0
	}, "no per-enterprise lane state left")
	// The streams hold the payloads (in this process's embedded server): out
	// of the way, so that the heap shows what the worker keeps.
	for _, name := range []string{worker.StreamCommands, worker.StreamEvents} {
		s, err := js.Stream(context.Background(), name)
		if err == nil {
			err = s.Purge(context.Background())
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	after := heapInUse()
	t.Logf("%d commands of made-up enterprises (%d KiB ids) and %d of a configured one: heap %.1f MiB before, %.1f MiB after (%+.1f MiB)",
		ghosts, idBytes>>10, known, mib(before), mib(after), mib(after)-mib(before))
}

func heapInUse() uint64 {
	var m runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

func mib(n uint64) float64 { return float64(n) / (1 << 20) }

// laneTenants configures n small tenants ("slow-0", ...) at rate each.
func laneTenants(t *testing.T, n int, rate float64) (*sandbox.Server, *xylink.Client, map[string]float64, []string) {
	t.Helper()
	var ents []sandbox.Enterprise
	var creds []xylink.Credentials
	rates := map[string]float64{}
	var ids []string
	for i := range n {
		id := fmt.Sprintf("slow-%d", i)
		ids = append(ids, id)
		ents = append(ents, sandbox.Enterprise{ID: id, Token: id + "-token", Rate: 1000})
		creds = append(creds, xylink.Credentials{EnterpriseID: id, Token: xylink.Secret(id + "-token")})
		rates[id] = rate
	}
	sb := wt.StartSandbox(t, sandbox.Config{Rate: 1000, Enterprises: ents})
	return sb, wt.Client(t, sb, creds...), rates, ids
}

// startDispenser elects a dispenser of its own before the workers start, so
// that a worker's stop does not move the grants' queue (which keeps the
// order of requests, not across a new dispenser).
//
// It dispenses the one shard of a limiter of one shard (the workers must
// use WithRateShards(1)): a tenant's order holds while its dispenser stays,
// and with more shards than replicas, a replica that starts takes shards
// over.
func startDispenser(t *testing.T, srv *embedded.Server, rates map[string]float64) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	disp, err := ratelimit.NewCluster(ctx, wt.Connect(t, srv), ratelimit.Options{Name: "dispenser", Shards: 1, Rate: func(ent string) float64 {
		if r, ok := rates[ent]; ok {
			return r
		}
		return 20
	}})
	if err != nil {
		t.Fatal(err)
	}
	wt.Eventually(t, 10*time.Second, func() bool { return disp.Stats().Dispensing }, "a dispenser elected")
}

// publishBacklog publishes per commands for each tenant, tenant after
// tenant; command i of tenant e is for meeting "m-e-i".
func publishBacklog(t *testing.T, js jetstream.JetStream, ids []string, per int) {
	t.Helper()
	for _, ent := range ids {
		for i := range per {
			id := fmt.Sprintf("%s-%03d", ent, i)
			wt.Publish(t, js, id, wt.Command(id, "m-"+id, "enterpriseId", fmt.Sprintf("%q", ent)))
		}
	}
}

// checkOnceInOrder: every command has one terminal event (created), each
// meeting got one call, and each tenant's calls after its first straight
// ones came in the order the commands were published.
//
// With moving (lanes handed over between replicas while their commands
// waited for grants), calls out of order are reported, not failed: a command
// of the replica that hands over whose grant passed unused, or whose record
// write failed, may be overtaken by the next one on the replica that took
// the lane.
func checkOnceInOrder(t *testing.T, sb *sandbox.Server, events map[string][]wt.Event, ids []string, per, straight int, moving ...bool) {
	t.Helper()
	for id, evs := range events {
		if len(evs) != 1 || evs[0].Subject != worker.SubjectCreated {
			t.Errorf("%s: %d events, first on %s", id, len(evs), evs[0].Subject)
		}
	}
	calls := map[string]int{}
	byTenant := map[string][]string{}
	for _, r := range sb.Requests() {
		if r.Endpoint != "dynamicGroup" {
			continue
		}
		calls[r.Meeting]++
		if r.Status != http.StatusOK {
			t.Errorf("%s: answered %d", r.Meeting, r.Status)
		}
		byTenant[r.EnterpriseID] = append(byTenant[r.EnterpriseID], r.Meeting)
	}
	for m, n := range calls {
		if n != 1 {
			t.Errorf("%s: %d calls", m, n)
		}
	}
	for _, ent := range ids {
		got := byTenant[ent]
		if len(got) != per {
			t.Errorf("%s: %d calls, want %d", ent, len(got), per)
			continue
		}
		rest := got[min(straight, len(got)):]
		switch {
		case sort.StringsAreSorted(rest):
		case len(moving) > 0 && moving[0]:
			t.Logf("%s: lane calls out of order while lanes moved between replicas: %v", ent, got)
		default:
			t.Errorf("%s: lane calls out of order: %v", ent, got)
		}
	}
}

// One replica serves at most its cap of lanes, and of lane commands in flight,
// however many tenants are crowded; the lanes it cannot take meanwhile wait
// for it, and every command ends once, in its tenant's order.
func TestLaneCapPerReplica(t *testing.T) {
	const tenants, per, maxLanes, maxHandlers = 6, 8, 2, 3
	srv := wt.StartNATS(t)
	sb, c, rates, ids := laneTenants(t, tenants, 2)
	js := wt.JetStream(t, wt.Connect(t, srv))
	w := wt.StartWorker(t, srv, c, worker.WithRate(20, rates), worker.WithLaneLimits(maxLanes, maxHandlers))
	wt.AwaitStream(t, js, worker.StreamCommands)
	publishBacklog(t, js, ids, per)
	events := wt.AwaitTerminal(t, js, tenants*per, 2*time.Minute)
	// One replica: max(2, ⌈2/s × 2 s⌉) of a tenant's commands go straight.
	checkOnceInOrder(t, sb, events, ids, per, 4)
	laned := 0
	for _, ent := range ids {
		if testutil.ToFloat64(w.Metrics().LaneMoves.WithLabelValues(ent)) > 0 {
			laned++
		}
	}
	_, most := worker.LanesServed(w.Worker)
	handlers := worker.MostLaneHandlers(w.Worker)
	t.Logf("%d tenants had a lane; at most %d lanes served at once (cap %d), %d lane commands in flight (cap %d)",
		laned, most, maxLanes, handlers, maxHandlers)
	if laned <= maxLanes {
		t.Fatalf("only %d tenants had a lane: the cap of %d was not put to the test", laned, maxLanes)
	}
	if most < 1 || most > maxLanes {
		t.Errorf("at most %d lanes served at once, want 1 to %d", most, maxLanes)
	}
	if handlers < 1 || handlers > maxHandlers {
		t.Errorf("at most %d lane commands in flight at once, want 1 to %d", handlers, maxHandlers)
	}
}

// Lanes spread over the replicas: a replica that starts while another serves
// every lane gets its share, and every command still ends once, in its
// tenant's order.
func TestLanesSpreadOverReplicas(t *testing.T) {
	const tenants, per = 6, 16
	srv := wt.StartNATS(t)
	sb, c, rates, ids := laneTenants(t, tenants, 1)
	startDispenser(t, srv, rates)
	js := wt.JetStream(t, wt.Connect(t, srv))
	opts := []worker.Option{worker.WithRate(20, rates), worker.WithRateShards(1)}
	a := wt.StartWorker(t, srv, c, opts...)
	wt.AwaitStream(t, js, worker.StreamCommands)
	publishBacklog(t, js, ids, per)
	wt.Eventually(t, time.Minute, func() bool { n, _ := worker.LanesServed(a.Worker); return n >= tenants-1 }, "the first replica serves the lanes")
	b := wt.StartWorker(t, srv, c, opts...)
	d := wt.StartWorker(t, srv, c, opts...)
	wt.Eventually(t, time.Minute, func() bool {
		nb, _ := worker.LanesServed(b.Worker)
		nd, _ := worker.LanesServed(d.Worker)
		return nb > 0 && nd > 0
	}, "the replicas that started later serve lanes too")
	// A replica that starts counts the others from their heartbeats (every
	// 5 s): for a moment it may count fewer and take more than its share; it
	// hands the extra over once it counts them all.
	settled := func() bool {
		na, _ := worker.LanesServed(a.Worker)
		nb, _ := worker.LanesServed(b.Worker)
		nd, _ := worker.LanesServed(d.Worker)
		return na <= 2 && nb <= 2 && nd <= 2
	}
	wt.Eventually(t, time.Minute, settled, fmt.Sprintf("at most ⌈%d/3⌉ lanes a replica", tenants))
	na, mostA := worker.LanesServed(a.Worker)
	nb, mostB := worker.LanesServed(b.Worker)
	nd, mostD := worker.LanesServed(d.Worker)
	t.Logf("lanes served once spread: %d, %d, %d (the most at once: %d, %d, %d)", na, nb, nd, mostA, mostB, mostD)
	events := wt.AwaitTerminal(t, js, tenants*per, 2*time.Minute)
	// The first replica alone: max(2, ⌈1/s × 2 s⌉) of a tenant's commands go
	// straight; lanes moved to the replicas that started.
	checkOnceInOrder(t, sb, events, ids, per, 2, true)
}

// A lane whose replica stops is taken by another: its commands end once, in
// order.
func TestLaneHandedOverWhenItsReplicaStops(t *testing.T) {
	const per = 12
	srv := wt.StartNATS(t)
	sb, c, rates, ids := laneTenants(t, 1, 1)
	startDispenser(t, srv, rates)
	js := wt.JetStream(t, wt.Connect(t, srv))
	opts := []worker.Option{worker.WithRate(20, rates), worker.WithRateShards(1)}
	a := wt.StartWorker(t, srv, c, opts...)
	wt.AwaitStream(t, js, worker.StreamCommands)
	publishBacklog(t, js, ids, per)
	wt.Eventually(t, time.Minute, func() bool { n, _ := worker.LanesServed(a.Worker); return n == 1 }, "the first replica serves the lane")
	b := wt.StartWorker(t, srv, c, opts...)
	if err := a.Stop(); err != nil {
		t.Fatal(err)
	}
	events := wt.AwaitTerminal(t, js, per, 2*time.Minute)
	if _, most := worker.LanesServed(b.Worker); most != 1 {
		t.Errorf("the second replica served %d lanes at once, want the lane", most)
	}
	checkOnceInOrder(t, sb, events, ids, per, 2)
}
