package deployments

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/xygroup/xygroup/worker"
	wt "github.com/xygroup/xygroup/worker/workertest"
	"github.com/xygroup/xygroup/xylink/sandbox"
)

// Every metric the Grafana dashboard queries exists in a worker's /metrics, after
// a little traffic: a success, a failure with retries, a parked command probed.
func TestDashboardMetricsExist(t *testing.T) {
	raw, err := os.ReadFile("grafana/dashboards/xygroup.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatal(err)
	}
	metricRE := regexp.MustCompile(`\bxygroup_[a-z_]+`)
	want := map[string]string{}
	for _, p := range dash.Panels {
		for _, tg := range p.Targets {
			for _, m := range metricRE.FindAllString(tg.Expr, -1) {
				for _, suffix := range []string{"_bucket", "_sum", "_count"} {
					m = strings.TrimSuffix(m, suffix)
				}
				want[m] = p.Title
			}
		}
	}
	if len(want) < 8 {
		t.Fatalf("only %d metrics found in the dashboard", len(want))
	}

	srv := wt.StartNATS(t)
	sb := wt.StartSandbox(t, sandbox.Config{Rate: 1e6})
	if _, err := sb.AddMeeting(sandbox.MeetingSpec{Number: "m-later", StartsIn: sandbox.Duration(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	if _, err := sb.AddMeeting(sandbox.MeetingSpec{Number: "m-down", Fail: &sandbox.FixedAnswer{Status: 503, ErrorCode: sandbox.CodeUnavailable}}); err != nil {
		t.Fatal(err)
	}
	w := wt.StartWorker(t, srv, wt.Client(t, sb), worker.WithProbeBackoff(worker.Backoff{Initial: 100 * time.Millisecond, Max: 200 * time.Millisecond}))
	hs, err := worker.StartHealthServer("127.0.0.1:0", w.Metrics(), w.Checks())
	if err != nil {
		t.Fatal(err)
	}
	defer hs.Close(context.Background())
	js := wt.JetStream(t, wt.Connect(t, srv))
	soon := `"` + time.Now().Add(2*time.Second).UTC().Format(time.RFC3339Nano) + `"`
	wt.Publish(t, js, "ok", wt.Command("ok", "m-ok"))
	wt.Publish(t, js, "down", wt.Command("down", "m-down", "deadline", soon))
	wt.Publish(t, js, "later", wt.Command("later", "m-later"))
	wt.AwaitTerminal(t, js, 2, time.Minute)

	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get("http://" + hs.Addr() + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var missing []string
		for m, panel := range want {
			if !regexp.MustCompile(`(?m)^` + m + `(_bucket|_sum|_count)?[{ ]`).Match(body) {
				missing = append(missing, m+" ("+panel+")")
			}
		}
		if len(missing) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the dashboard queries metrics that /metrics does not have: %v", missing)
		}
		time.Sleep(100 * time.Millisecond) // probes and heartbeats come on their own schedule
	}
}
