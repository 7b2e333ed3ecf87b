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
	use := func(since time.Time, maxWindow, throttled int) map[string]ratelimit.Dispensed {
		return map[string]ratelimit.Dispensed{"e": {Since: since, EnterpriseInfo: ratelimit.EnterpriseInfo{Rate: 20, MaxWindow1m: maxWindow, ThrottledTotal: throttled}}}
	}
	counted := func() float64 { return testutil.ToFloat64(m.LimiterThrottled.WithLabelValues("e")) }
	steps := []struct {
		use       map[string]ratelimit.Dispensed
		want      float64 // the counter after the step
		maxWindow int     // the gauge; -1: no series
	}{
		{use(since, 20, 2), 2, 20},
		{use(since, 20, 2), 2, 20},                 // nothing new
		{use(since, 18, 5), 5, 18},                 // three more
		{map[string]ratelimit.Dispensed{}, 5, -1},  // forgotten by the dispenser
		{use(since, 3, 1), 6, 3},                   // counting again
		{nil, 6, -1},                               // no longer dispensing
		{use(since.Add(time.Hour), 20, 4), 10, 20}, // dispensing again: a new count
		{use(since.Add(time.Hour), 20, 4), 10, 20},
	}
	for i, s := range steps {
		a.export(m, s.use, nil)
		if got := counted(); got != s.want {
			t.Fatalf("step %d: %v 429s counted, want %v", i, got, s.want)
		}
		series := testutil.CollectAndCount(m.LimiterMaxWindow)
		switch {
		case s.maxWindow < 0 && len(s.use) == 0 && series != 0:
			t.Fatalf("step %d: %d max-window series on a replica that does not dispense", i, series)
		case s.maxWindow >= 0 && testutil.ToFloat64(m.LimiterMaxWindow.WithLabelValues("e")) != float64(s.maxWindow):
			t.Fatalf("step %d: max window %v, want %d", i, testutil.ToFloat64(m.LimiterMaxWindow.WithLabelValues("e")), s.maxWindow)
		}
	}
}
