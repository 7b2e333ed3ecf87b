package worker_test

import (
	"context"
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/xygroup/xygroup/worker"
	wt "github.com/xygroup/xygroup/worker/workertest"
	"github.com/xygroup/xygroup/xylink/sandbox"
)

// readyz asks the health server and returns the status and the report.
func readyz(t *testing.T, addr string) (int, map[string]string) {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	report := map[string]string{}
	_ = json.NewDecoder(resp.Body).Decode(&report)
	return resp.StatusCode, report
}

// A restart of the only NATS server loses the in-memory limiter bucket. The
// worker creates it again, a dispenser is elected and commands flow; meanwhile
// /readyz says that no call can be made.
func TestWorkerGrantsAgainAfterNATSRestart(t *testing.T) {
	srv := wt.StartRestartableNATS(t)
	sb := wt.StartSandbox(t, sandbox.Config{Rate: 100})
	w := wt.StartWorkerOn(t, srv.Connect(), wt.Client(t, sb))
	hs, err := worker.StartHealthServer("127.0.0.1:0", w.Metrics(), w.Checks())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = hs.Close(context.Background()) })

	js := wt.JetStream(t, srv.Connect())
	wt.Publish(t, js, "before", wt.Command("before", "910000000001"))
	wt.AwaitTerminal(t, js, 1, 30*time.Second)

	srv.Stop()
	var report map[string]string
	start := time.Now()
	for {
		var status int
		status, report = readyz(t, hs.Addr())
		if status == http.StatusServiceUnavailable && report["limiter"] != "ok" && report["limiter"] != "" {
			break
		}
		if time.Since(start) > 20*time.Second {
			t.Fatalf("/readyz did not report the missing dispenser: %d %v", status, report)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("/readyz 503 while NATS is away: %v", report)

	srv.Start()
	restarted := time.Now()
	wt.Publish(t, js, "after", wt.Command("after", "910000000002"))
	events := wt.AwaitTerminal(t, js, 2, 30*time.Second)
	if ev := events["after"]; len(ev) == 0 || ev[len(ev)-1].Subject != worker.SubjectCreated {
		t.Fatalf("the command published after the restart did not end as created: %v", ev)
	}
	t.Logf("command after the restart created %v after it", time.Since(restarted).Round(time.Millisecond))
	for {
		status, report := readyz(t, hs.Addr())
		if status == http.StatusOK {
			break
		}
		if time.Since(restarted) > 30*time.Second {
			t.Fatalf("/readyz not ready again after the restart: %d %v", status, report)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
