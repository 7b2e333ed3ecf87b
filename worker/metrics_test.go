package worker_test

import (
	"os"
	"regexp"
	"slices"
	"testing"
	"time"

	wt "github.com/xygroup/xygroup/worker/workertest"
	"github.com/xygroup/xygroup/xylink/sandbox"
)

// Every metric the README names exists once the worker runs, before any
// command: a dashboard or an alert on a rate sees the series at zero, not a
// gap until the first increment.
func TestDocumentedMetricsExistFromTheStart(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	var documented []string
	for _, name := range regexp.MustCompile(`xygroup_[a-z_]+`).FindAllString(string(readme), -1) {
		if !slices.Contains(documented, name) {
			documented = append(documented, name)
		}
	}
	if len(documented) < 10 {
		t.Fatalf("the README names %d metrics: %v", len(documented), documented)
	}
	srv := wt.StartNATS(t)
	w := wt.StartWorker(t, srv, wt.Client(t, wt.StartSandbox(t, sandbox.Config{})))
	var missing []string
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("missing: %v", missing)
		}
	})
	wt.Eventually(t, 30*time.Second, func() bool {
		families, err := w.Metrics().Registry.Gather()
		if err != nil {
			t.Fatal(err)
		}
		present := map[string]bool{}
		for _, f := range families {
			if len(f.GetMetric()) > 0 {
				present[f.GetName()] = true
			}
		}
		missing = missing[:0]
		for _, name := range documented {
			if !present[name] {
				missing = append(missing, name)
			}
		}
		return len(missing) == 0
	}, "every documented metric series")
	t.Logf("%d documented metrics, all present before the first command", len(documented))
}
