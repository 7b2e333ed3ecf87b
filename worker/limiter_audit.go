package worker

import (
	"time"

	"github.com/xygroup/xygroup/worker/ratelimit"
)

// audited feeds the dispenser's own audit of the limit (ratelimit
// EnterpriseInfo.MaxWindow1m and ThrottledTotal) to the metrics while this
// replica dispenses: the max-window gauge is this replica's only then, and
// the 429 counter grows by what the dispenser counted since the last look.
type audited struct {
	since time.Time      // the dispenser whose counts seen holds
	seen  map[string]int // its ThrottledTotal per enterprise, as last exported
}

// export sets the metrics from the dispenser's use (ratelimit.Cluster.Use),
// nil while this replica does not dispense.
func (a *audited) export(m *Metrics, since time.Time, use map[string]ratelimit.EnterpriseInfo, known []string) {
	m.LimiterMaxWindow.Reset()
	if use == nil {
		a.seen = nil
		return
	}
	if !since.Equal(a.since) || a.seen == nil {
		a.since, a.seen = since, map[string]int{}
	}
	for _, ent := range known {
		m.LimiterMaxWindow.WithLabelValues(ent).Set(0)
	}
	for ent, e := range use {
		m.LimiterMaxWindow.WithLabelValues(ent).Set(float64(e.MaxWindow1m))
		// A count lower than the last one started again (the enterprise was
		// idle a minute and forgotten): all of it is new.
		if n := e.ThrottledTotal - a.seen[ent]; n > 0 {
			m.LimiterThrottled.WithLabelValues(ent).Add(float64(n))
		} else if n < 0 {
			m.LimiterThrottled.WithLabelValues(ent).Add(float64(e.ThrottledTotal))
		}
	}
	for ent := range a.seen {
		if _, ok := use[ent]; !ok {
			delete(a.seen, ent)
		}
	}
	for ent, e := range use {
		a.seen[ent] = e.ThrottledTotal
	}
}
