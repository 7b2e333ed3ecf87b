package statuspage_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/xygroup/xygroup/worker"
	"github.com/xygroup/xygroup/worker/ratelimit"
	"github.com/xygroup/xygroup/worker/statuspage"
	wt "github.com/xygroup/xygroup/worker/workertest"
	"github.com/xygroup/xygroup/xylink/sandbox"
)

// A tenant's budget shows what the dispenser counted itself: the most
// requests it let leave in a second of the last minute against the rate, and
// the 429s reported; the dispensing replica's metrics say the same.
func TestBudgetShowsTheLimitAudit(t *testing.T) {
	sb := wt.StartSandbox(t, sandbox.Config{Rate: 1e6}) // no 429 but the one reported below
	ns := wt.StartNATS(t)
	nc := wt.Connect(t, ns)
	js := wt.JetStream(t, nc)
	w := wt.StartWorkerOn(t, nc, wt.Client(t, sb), worker.WithRate(20, nil))
	page, err := statuspage.New(statuspage.Options{JS: js, Inspector: w.Worker, DefaultEnterprise: wt.Enterprise})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(page)
	defer srv.Close()

	const n = 40 // two seconds of the budget, asked for at once
	for i := range n {
		id := fmt.Sprintf("c-%d", i)
		wt.Publish(t, js, id, wt.Command(id, fmt.Sprintf("m-%d", i)))
	}
	wt.AwaitTerminal(t, js, n, 2*time.Minute)
	lease := func() ratelimit.EnterpriseInfo {
		info, ok, err := ratelimit.Dispenser(context.Background(), js)
		if err != nil || !ok {
			t.Fatalf("no lease: %v", err)
		}
		return info.Enterprises[wt.Enterprise]
	}
	w.ClusterLimiter().Throttled(wt.Enterprise)
	wt.Eventually(t, 30*time.Second, func() bool { return lease().ThrottledTotal == 1 }, "the lease counting the 429")

	// With every command ended, no grant is given any more: the figure stays
	// (it falls once its seconds are a minute old), and the page's lies
	// between the lease's before and after. The last grant was seconds ago.
	before := lease().MaxWindow1m
	status, body := fetch(t, http.MethodGet, srv.URL+"/", nil)
	after := lease().MaxWindow1m
	if status != http.StatusOK {
		t.Fatalf("GET /: %d", status)
	}
	m := regexp.MustCompile(`class="max-window[^"]*">max (\d+) of 20<`).FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("the budget lacks the most requests in a second:\n%s", body)
	}
	shown, _ := strconv.Atoi(m[1])
	if shown < min(before, after) || shown > max(before, after) || before < 1 || shown > 20 {
		t.Fatalf("the page shows max %d of 20; the lease %d before, %d after", shown, before, after)
	}
	if !regexp.MustCompile(`class="throttled-total bad">1<`).MatchString(body) {
		t.Fatalf("the budget lacks the dispenser's 429 count:\n%s", body)
	}
	page1 := filepath.Join(t.TempDir(), "overview.html")
	if err := os.WriteFile(page1, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	validateHTML(t, page1)

	// The worker dispenses: its metrics, set every few seconds, say the same.
	metrics := w.Metrics()
	wt.Eventually(t, 30*time.Second, func() bool {
		return testutil.ToFloat64(metrics.LimiterThrottled.WithLabelValues(wt.Enterprise)) == 1
	}, "xygroup_limiter_throttled_total counting the 429")
	wt.Eventually(t, 30*time.Second, func() bool {
		v := int(testutil.ToFloat64(metrics.LimiterMaxWindow.WithLabelValues(wt.Enterprise)))
		return v == lease().MaxWindow1m
	}, "xygroup_limiter_max_window_requests showing the lease's figure")
}
