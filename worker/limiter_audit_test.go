package worker

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/xygroup/xygroup/worker/ratelimit"
)

// The dispenser's counts become metrics: the 429 counter grows by what the
// dispenser counted since the last look (each answer once, across a count
// that started again and a new dispenser), the max-window gauge is there only
// while this replica dispenses.
func TestAuditedExportCountsEach429Once(t *testing.T) {
	m := NewMetrics()
	var a audited
	since := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	use := func(maxWindow, throttled int) map[string]ratelimit.EnterpriseInfo {
		return map[string]ratelimit.EnterpriseInfo{"e": {Rate: 20, MaxWindow1m: maxWindow, ThrottledTotal: throttled}}
	}
	counted := func() float64 { return testutil.ToFloat64(m.LimiterThrottled.WithLabelValues("e")) }
	steps := []struct {
		since     time.Time
		use       map[string]ratelimit.EnterpriseInfo
		want      float64 // the counter after the step
		maxWindow int     // the gauge; -1: no series
	}{
		{since, use(20, 2), 2, 20},
		{since, use(20, 2), 2, 20},                            // nothing new
		{since, use(18, 5), 5, 18},                            // three more
		{since, map[string]ratelimit.EnterpriseInfo{}, 5, -1}, // forgotten by the dispenser
		{since, use(3, 1), 6, 3},                              // counting again
		{time.Time{}, nil, 6, -1},                             // no longer dispensing
		{since.Add(time.Hour), use(20, 4), 10, 20},            // dispensing again: a new count
		{since.Add(time.Hour), use(20, 4), 10, 20},
	}
	for i, s := range steps {
		a.export(m, s.since, s.use, []string{"known"})
		if got := counted(); got != s.want {
			t.Fatalf("step %d: %v 429s counted, want %v", i, got, s.want)
		}
		series := testutil.CollectAndCount(m.LimiterMaxWindow)
		switch {
		case s.maxWindow < 0 && s.use == nil && series != 0:
			t.Fatalf("step %d: %d max-window series on a replica that does not dispense", i, series)
		case s.maxWindow >= 0 && testutil.ToFloat64(m.LimiterMaxWindow.WithLabelValues("e")) != float64(s.maxWindow):
			t.Fatalf("step %d: max window %v, want %d", i, testutil.ToFloat64(m.LimiterMaxWindow.WithLabelValues("e")), s.maxWindow)
		}
	}
}
