package worker

import (
	"github.com/xygroup/xygroup/worker/ratelimit"
)

// audited feeds the dispenser's own audit of the limit (ratelimit
// EnterpriseInfo.MaxWindow1m and ThrottledTotal) to the metrics for the
// enterprises whose shard this replica dispenses: the max-window gauge is
// this replica's only then, and the 429 counter grows by what the dispenser
// counted since the last look.
type audited struct {
	seen map[string]ratelimit.Dispensed // per enterprise, as last exported
}

// export sets the metrics from the dispensers' use (ratelimit.Cluster.Use);
// mine are the known tenants whose shard this replica dispenses (their
// gauge is 0 before their first grant).
func (a *audited) export(m *Metrics, use map[string]ratelimit.Dispensed, mine []string) {
	m.LimiterMaxWindow.Reset()
	for _, ent := range mine {
		m.LimiterMaxWindow.WithLabelValues(ent).Set(0)
	}
	if len(use) == 0 {
		a.seen = nil
		return
	}
	if a.seen == nil {
		a.seen = map[string]ratelimit.Dispensed{}
	}
	for ent, e := range use {
		m.LimiterMaxWindow.WithLabelValues(ent).Set(float64(e.MaxWindow1m))
		last, ok := a.seen[ent]
		if !ok || !last.Since.Equal(e.Since) {
			last = ratelimit.Dispensed{Since: e.Since} // a new dispenser counts from zero
		}
		// A count lower than the last one started again (the enterprise was
		// idle a minute and forgotten): all of it is new.
		if n := e.ThrottledTotal - last.ThrottledTotal; n > 0 {
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
		a.seen[ent] = e
	}
}
