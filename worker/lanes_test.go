package worker_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/xygroup/xygroup/worker"
	wt "github.com/xygroup/xygroup/worker/workertest"
	"github.com/xygroup/xygroup/xylink"
	"github.com/xygroup/xygroup/xylink/sandbox"
)

// A tenant with a tiny rate and a big backlog does not slow another tenant:
// its commands wait in its lane, not in the replica's slots. Its commands all
// end exactly once, and reach the API in the order they were published.
func TestLaneKeepsOtherTenantsRate(t *testing.T) {
	srv := wt.StartNATS(t)
	sb := wt.StartSandbox(t, sandbox.Config{Rate: 1000, Enterprises: []sandbox.Enterprise{{ID: "small", Token: "small-token", Rate: 1000}}})
	c := wt.Client(t, sb, xylink.Credentials{EnterpriseID: "small", Token: "small-token"})
	js := wt.JetStream(t, wt.Connect(t, srv))
	const nSmall, nOther = 20, 200
	// The backlog is there before the worker starts: the small tenant's first.
	wt.StartWorker(t, srv, c, worker.WithConcurrency(8), worker.WithRate(20, map[string]float64{"small": 1}))
	wt.AwaitStream(t, js, worker.StreamCommands)
	start := time.Now()
	for i := range nSmall {
		id := fmt.Sprintf("small-%03d", i)
		wt.Publish(t, js, id, wt.Command(id, "m-"+id, "enterpriseId", `"small"`))
	}
	for i := range nOther {
		id := fmt.Sprintf("other-%03d", i)
		wt.Publish(t, js, id, wt.Command(id, "m-"+id))
	}
	events := wt.AwaitTerminal(t, js, nSmall+nOther, 2*time.Minute)
	for id, evs := range events {
		if len(evs) != 1 || evs[0].Subject != worker.SubjectCreated {
			t.Errorf("%s: %d events, first on %s", id, len(evs), evs[0].Subject)
		}
	}

	var small []string
	var otherFirst, otherLast time.Time
	otherN := 0
	calls := map[string]int{}
	for _, r := range sb.Requests() {
		if r.Endpoint != "dynamicGroup" {
			continue
		}
		calls[r.Meeting]++
		if r.Status != http.StatusOK {
			t.Errorf("%s: answered %d", r.Meeting, r.Status)
			continue
		}
		if strings.HasPrefix(r.Meeting, "m-small-") {
			small = append(small, strings.TrimPrefix(r.Meeting, "m-"))
			continue
		}
		otherN++
		if otherFirst.IsZero() {
			otherFirst = r.At
		}
		otherLast = r.At
	}
	for m, n := range calls {
		if n != 1 {
			t.Errorf("%s: %d calls", m, n)
		}
	}
	// The first commands of the small tenant went straight (its share of the
	// replica), in any order among themselves; the lane's follow in order.
	straight := 2
	if len(small) != nSmall {
		t.Fatalf("%d calls of the small tenant, want %d", len(small), nSmall)
	}
	for i, id := range small {
		if i < straight {
			if id >= fmt.Sprintf("small-%03d", straight) {
				t.Errorf("call %d of the small tenant is %s, a lane command ahead of the ones that went straight", i, id)
			}
			continue
		}
		if want := fmt.Sprintf("small-%03d", i); id != want {
			t.Errorf("call %d of the small tenant is %s, want %s (order %v)", i, id, want, small)
			break
		}
	}
	otherRate := float64(otherN-1) / otherLast.Sub(otherFirst).Seconds()
	t.Logf("other tenant: %d created, first call %v after the start, %.2f calls/s (rate 20, guard 25 ms: 19.5/s at most); small tenant's calls in order: %v",
		otherN, otherFirst.Sub(start).Round(time.Millisecond), otherRate, small)
	if otherRate < 17.5 {
		t.Errorf("the other tenant got %.2f calls/s of its 20/s", otherRate)
	}
	if otherFirst.Sub(start) > 3*time.Second {
		t.Errorf("the other tenant's first call came %v after the start", otherFirst.Sub(start))
	}
}

// A burst for meetings that have not started, from a crowded tenant: the
// commands waiting for their meeting's first answer do not hold up the
// tenant's commands for other meetings, so the burst parks at the pace of
// the tenant's grants, not one meeting's answer after the other.
func TestLaneBurstForWaitingMeetingsParksAtItsPace(t *testing.T) {
	const meetings, perMeeting, rate = 20, 3, 10
	const latency = time.Second // each answer's time at the sandbox: ten grants' spacing
	srv := wt.StartNATS(t)
	sb := wt.StartSandbox(t, sandbox.Config{Rate: 1e6, Faults: sandbox.Faults{Latency: sandbox.Duration(latency)}})
	c := wt.Client(t, sb)
	js := wt.JetStream(t, wt.Connect(t, srv))
	wt.StartWorker(t, srv, c, worker.WithRate(rate, nil))
	wt.AwaitStream(t, js, worker.StreamCommands)
	for i := range meetings {
		m := fmt.Sprintf("m-burst-%02d", i)
		if _, err := sb.AddMeeting(sandbox.MeetingSpec{Number: m, StartsIn: sandbox.Duration(time.Hour)}); err != nil {
			t.Fatal(err)
		}
		for j := range perMeeting {
			id := fmt.Sprintf("burst-%02d-%d", i, j)
			wt.Publish(t, js, id, wt.Command(id, m))
		}
	}
	start := time.Now()
	wt.AwaitStream(t, js, worker.StreamEvents)
	s, err := js.Stream(context.Background(), worker.StreamEvents)
	if err != nil {
		t.Fatal(err)
	}
	// Calls held in the sandbox's latency at once: one meeting after the
	// other would never have two.
	overlap := 0
	for {
		overlap = max(overlap, sb.Stats().Delaying)
		info, err := s.Info(context.Background(), jetstream.WithSubjectFilter(worker.SubjectWaiting))
		if err == nil && info.State.Msgs >= meetings*perMeeting {
			break
		}
		if time.Since(start) > 2*time.Minute {
			t.Fatalf("waiting events: %+v (%v), want %d", info.State, err, meetings*perMeeting)
		}
		time.Sleep(20 * time.Millisecond)
	}
	took := time.Since(start)
	// One first call per meeting at the tenant's rate, and one answer's
	// latency: about 3 s. One meeting after the other would be 20 answers (20 s).
	t.Logf("%d commands for %d waiting meetings parked in %v (%v one after the other); %d calls, at most %d at the sandbox at once",
		meetings*perMeeting, meetings, took.Round(10*time.Millisecond), meetings*latency, sb.Stats().Requests, overlap)
	if overlap < 2 {
		t.Errorf("the meetings' first calls went one after the other: at most %d at the sandbox at once", overlap)
	}
}

// A command in a tenant's lane whose record is gone is not stranded. The
// state arises when a drainer deletes the record of an empty lane, a command
// is moved in meanwhile (its mover saw the record, so it created none), and
// the drainer stops before it writes the record again (SIGTERM in its 50 ms
// sleep, or a failed write); or when a replica dies between storing a moved
// command and creating the lane's record. Nothing else ever opens the lane
// again unless the tenant is crowded once more: the command gets no terminal
// event, and its deadline is not enforced.
func TestLaneWithoutRecordIsDrained(t *testing.T) {
	srv := wt.StartNATS(t)
	sb := wt.StartSandbox(t, sandbox.Config{Rate: 1000})
	c := wt.Client(t, sb)
	js := wt.JetStream(t, wt.Connect(t, srv))
	wt.StartWorker(t, srv, c)
	wt.AwaitStream(t, js, worker.StreamParked)
	wt.AwaitStream(t, js, worker.StreamEvents)
	// The command as a mover stored it: in the lane, acked on the shared consumer.
	m := nats.NewMsg(worker.LaneSubject(wt.Enterprise))
	m.Data = wt.Command("orphan-1", "m-orphan-1")
	m.Header.Set(nats.MsgIdHdr, "xygroup.lane.XYGROUP_COMMANDS.1")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := js.PublishMsg(ctx, m); err != nil {
		t.Fatal(err)
	}
	events := wt.AwaitTerminal(t, js, 1, 20*time.Second)
	if evs := events["orphan-1"]; len(evs) != 1 {
		t.Fatalf("orphan-1: %d terminal events, want 1", len(evs))
	}
}

// A crowded tenant whose credentials are refused: its lane is not drained
// while its commands are held, but the deadlines of the commands in the lane
// are still enforced (each ends expired at its deadline, as held ones do).
func TestLaneDeadlinesEnforcedWhileTenantHeld(t *testing.T) {
	srv := wt.StartNATS(t)
	sb := wt.StartSandbox(t, sandbox.Config{Rate: 1e6})
	c, err := xylink.NewClient(sb.URL, xylink.WithTenants(xylink.Credentials{EnterpriseID: wt.Enterprise, Token: "wrong-token"}))
	if err != nil {
		t.Fatal(err)
	}
	opts := []worker.Option{worker.WithRate(1, nil), worker.WithBreakerSettings(worker.BreakerSettings{CredentialsRetry: time.Second})}
	wt.StartWorker(t, srv, c, opts...)
	js := wt.JetStream(t, wt.Connect(t, srv))
	wt.AwaitStream(t, js, worker.StreamCommands)
	const n = 10
	deadline := `"` + time.Now().Add(5*time.Second).UTC().Format(time.RFC3339Nano) + `"`
	for i := range n {
		id := fmt.Sprintf("held-%02d", i)
		wt.Publish(t, js, id, wt.Command(id, "m-"+id, "deadline", deadline))
	}
	events := wt.AwaitTerminal(t, js, n, 25*time.Second)
	for id, evs := range events {
		if len(evs) != 1 {
			t.Errorf("%s: %d events", id, len(evs))
		}
	}
}
