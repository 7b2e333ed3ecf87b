package worker_test

import (
	"fmt"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/xygroup/xygroup/worker"
	wt "github.com/xygroup/xygroup/worker/workertest"
	"github.com/xygroup/xygroup/xylink"
	"github.com/xygroup/xygroup/xylink/sandbox"
)

// A gateway that answers 504 after the platform created the groups (one request
// in twenty): the retry meets 66684, and since a 504 may follow an action, the
// command ends as created (reconciled), never as failed.already_open.
func TestGatewayTimeoutAfterTheCreateIsReconciled(t *testing.T) {
	srv := wt.StartNATS(t)
	sb := wt.StartSandbox(t, sandbox.Config{Rate: 1e6})
	var seen, replaced atomic.Int64
	base := faultProxy{after: func(r *http.Request) (int, bool) {
		if !isDynamicGroup(r) || seen.Add(1)%20 != 0 {
			return 0, false
		}
		replaced.Add(1)
		return http.StatusGatewayTimeout, true
	}}.start(t, sb.URL)
	c, err := xylink.NewClient(base, xylink.WithTenants(xylink.Credentials{EnterpriseID: wt.Enterprise, Token: wt.Token}))
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		wt.StartWorker(t, srv, c, worker.WithConcurrency(16),
			worker.WithBreakerSettings(worker.BreakerSettings{ConsecutiveFailures: 1000}))
	}
	js := wt.JetStream(t, wt.Connect(t, srv))
	wt.AwaitStream(t, js, worker.StreamCommands)
	const n = 300
	for i := range n {
		id := fmt.Sprintf("gw-%03d", i)
		wt.Publish(t, js, id, wt.Command(id, "m-"+id))
	}
	events := wt.AwaitTerminal(t, js, n, 2*time.Minute)
	created, reconciled, alreadyOpen := 0, 0, 0
	for id, evs := range events {
		if len(evs) != 1 {
			t.Errorf("%s: %d events", id, len(evs))
		}
		switch evs[0].Subject {
		case worker.SubjectCreated:
			created++
			if evs[0].Fields["reconciled"] == true {
				reconciled++
			}
		case worker.SubjectFailed + ".already_open":
			alreadyOpen++
		default:
			t.Errorf("%s: %s %s", id, evs[0].Subject, evs[0].Data)
		}
	}
	st := sb.Stats()
	t.Logf("%d commands; %d answers replaced by 504 after the create; created %d (%d reconciled), failed.already_open %d; sandbox %v",
		n, replaced.Load(), created, reconciled, alreadyOpen, st.ByAnswer)
	if alreadyOpen != 0 || created != n {
		t.Fatalf("%d failed.already_open, %d of %d created", alreadyOpen, created, n)
	}
	if len(st.DuplicateCreates) != 0 || st.ByAnswer["200"] != n {
		t.Fatalf("sandbox: %d creates for %d commands, duplicates %v", st.ByAnswer["200"], n, st.DuplicateCreates)
	}
}
