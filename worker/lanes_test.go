package worker_test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

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
