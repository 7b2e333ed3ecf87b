package ratelimit

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"
)

// The lease is one KV value written every RenewEvery; NATS refuses a payload
// over 1 MB (its default max_payload). The five minutes of history it carries
// for the status page (the busiest HistoryEnterprises only) must add little,
// however many tenants there are.
func TestLeaseHistoryStaysSmallWithManyTenants(t *testing.T) {
	now := time.Date(2026, 11, 26, 12, 0, 5, 0, time.UTC)
	build := func(n int, busy, throttled bool) shardLease {
		d := newDispenser(Options{})
		d.opts.defaults()
		d.opts.Now = func() time.Time { return now }
		for i := range n {
			q := &enterpriseQueue{rate: 20, nextAt: now}
			for w := range HistoryWindows + 1 {
				at := now.Add(-time.Duration(HistoryWindows-w) * 10 * time.Second)
				if busy {
					for range 195 { // a tenant near its 20/s: 195 grants per ten seconds
						q.history.add(at, 0)
					}
					q.recent = append(q.recent, at)
				} else if w == HistoryWindows-1 {
					q.history.add(at, 0)
				}
				if throttled && w%3 == 0 {
					q.history.add(at, 1)
				}
			}
			// enterprise ids as XYLink gives them: 40 hex characters
			d.ents[fmt.Sprintf("%040x", i)] = q
		}
		return shardLease{&Cluster{opts: Options{Name: "xygroup-worker-7d9c6b5f4-abcde", Shards: 1}}, d}
	}
	withoutHistory := func(c shardLease) int {
		var info LeaseInfo
		_ = json.Unmarshal(c.value(), &info)
		for id, e := range info.Enterprises {
			e.Granted5m, e.Throttled5m = nil, nil
			info.Enterprises[id] = e
		}
		info.WindowsEnd = time.Time{}
		b, _ := json.Marshal(info)
		return len(b)
	}
	const maxPayload = 1 << 20
	for _, tc := range []struct {
		name            string
		busy, throttled bool
	}{{"one grant", false, false}, {"busy", true, false}, {"busy+429s", true, true}} {
		one, two := len(build(1, tc.busy, tc.throttled).value()), len(build(2, tc.busy, tc.throttled).value())
		per := two - one
		c := build(2000, tc.busy, tc.throttled)
		start := time.Now()
		v := c.value()
		took := time.Since(start)
		bare := withoutHistory(c)
		t.Logf("%-10s: one tenant adds %d bytes; 2000 tenants: %d bytes (%d without history), built in %v holding the dispenser's lock",
			tc.name, per, len(v), bare, took)
		if len(v) > maxPayload/2 {
			t.Errorf("%s: 2000 tenants make a lease of %d bytes, over half of NATS's 1 MB max payload (written every 500 ms)", tc.name, len(v))
		}
		if extra := len(v) - bare; extra > HistoryEnterprises*400 {
			t.Errorf("%s: the history adds %d bytes with 2000 tenants, more than %d tenants' worth", tc.name, extra, HistoryEnterprises)
		}
	}
}

// shardLease is one shard's dispenser and the replica writing its lease.
type shardLease struct {
	c *Cluster
	d *dispenser
}

func (l shardLease) value() []byte { return l.c.leaseValue(0, l.d) }
