package ratelimit

import (
	"context"
	"encoding/json"
	"errors"
	"sort"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// LeaseInfo is what the dispenser writes in its lease: who it is and, per
// enterprise, its rate and the grants of the last ten seconds.
type LeaseInfo struct {
	Replica     string                    `json:"replica"`
	Since       time.Time                 `json:"since"`
	Enterprises map[string]EnterpriseInfo `json:"enterprises,omitempty"`
	// WindowsEnd is when the enterprises' last complete ten-second window ended.
	WindowsEnd time.Time `json:"windowsEnd,omitzero"`
}

// EnterpriseInfo is one enterprise's budget and use.
type EnterpriseInfo struct {
	Rate       float64 `json:"rate"`
	Granted10s int     `json:"granted10s"`
	Waiting    int     `json:"waiting"`
	// GuardMs is the guard the enterprise's grants are spaced with now (it
	// learns from rate-limit answers), and Throttled10m the rate-limit
	// answers reported in the last ten minutes.
	GuardMs      float64 `json:"guardMs"`
	Throttled10m int     `json:"throttled10m,omitempty"`
	// Granted5m and Throttled5m are the grants and the rate-limit answers of
	// the last HistoryWindows complete ten-second windows, oldest first, as
	// counted by this dispenser (a new dispenser starts them again); the last
	// window ends at LeaseInfo.WindowsEnd.
	Granted5m   []int `json:"granted5m,omitempty"`
	Throttled5m []int `json:"throttled5m,omitempty"`
	// MaxWindow1m is the most requests the dispenser let leave in any
	// sliding second of the last minute, counted at the departures it
	// scheduled (not more than the rate while the limit holds), and
	// ThrottledTotal the rate-limit answers reported since it began serving
	// the enterprise (a new dispenser, or a minute without grants or 429s,
	// starts both again).
	MaxWindow1m    int `json:"maxWindow1m,omitempty"`
	ThrottledTotal int `json:"throttledTotal,omitempty"`
}

// Window is one ten-second window of an enterprise's use.
type Window struct {
	Start     time.Time
	Granted   int
	Throttled int
}

// Windows are the enterprise's windows, oldest first; end is
// LeaseInfo.WindowsEnd.
func (e EnterpriseInfo) Windows(end time.Time) []Window {
	out := make([]Window, len(e.Granted5m))
	for i, g := range e.Granted5m {
		out[i] = Window{Start: end.Add(-time.Duration(len(e.Granted5m)-i) * windowLength), Granted: g}
		if i < len(e.Throttled5m) {
			out[i].Throttled = e.Throttled5m[i]
		}
	}
	return out
}

// HistoryWindows: how many ten-second windows the lease keeps (five minutes).
const HistoryWindows = 30

const windowLength = 10 * time.Second

// history counts an enterprise's grants and rate-limit answers per
// ten-second window, in a ring of HistoryWindows + 1 (the current one).
type history struct {
	counts [HistoryWindows + 1][2]int // granted, throttled
	cur    int64                      // the current window's number (Unix time / 10 s)
}

func (h *history) advance(now time.Time) {
	n := now.UnixNano() / int64(windowLength)
	for h.cur < n {
		h.cur++
		h.counts[h.cur%int64(len(h.counts))] = [2]int{}
		if n-h.cur > int64(len(h.counts)) {
			h.cur = n - int64(len(h.counts)) // a long idle time: skip ahead
		}
	}
}

func (h *history) add(now time.Time, kind int) {
	h.advance(now)
	h.counts[h.cur%int64(len(h.counts))][kind]++
}

// windows returns the complete windows' counts, oldest first (throttled nil
// when there were none), and when the last one ended.
func (h *history) windows(now time.Time) (granted, throttled []int, end time.Time) {
	h.advance(now)
	granted = make([]int, 0, HistoryWindows)
	any429 := false
	for n := h.cur - HistoryWindows; n < h.cur; n++ {
		c := h.counts[n%int64(len(h.counts))]
		granted = append(granted, c[0])
		any429 = any429 || c[1] > 0
	}
	if any429 {
		throttled = make([]int, 0, HistoryWindows)
		for n := h.cur - HistoryWindows; n < h.cur; n++ {
			throttled = append(throttled, h.counts[n%int64(len(h.counts))][1])
		}
	}
	return granted, throttled, time.Unix(0, h.cur*int64(windowLength)).UTC()
}

// Guards returns each enterprise's guard now, while this replica dispenses
// (nil otherwise): the enterprises it has seen, and the known ones it has
// not, at the floor.
func (c *Cluster) Guards(known ...string) map[string]time.Duration {
	c.mu.Lock()
	d := c.disp
	c.mu.Unlock()
	if d == nil {
		return nil
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	now := d.opts.Now()
	out := make(map[string]time.Duration, len(d.ents)+len(known))
	for _, id := range known {
		out[id] = d.opts.Guard
	}
	for id, q := range d.ents {
		out[id] = d.guard(q, now)
	}
	return out
}

// Dispenser reads the current dispenser's lease: who dispenses, and each
// enterprise's use of its budget. ok is false when there is none.
func Dispenser(ctx context.Context, js jetstream.JetStream) (LeaseInfo, bool, error) {
	kv, err := js.KeyValue(ctx, Bucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return LeaseInfo{}, false, nil
	}
	if err != nil {
		return LeaseInfo{}, false, err
	}
	e, err := kv.Get(ctx, leaseKey)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return LeaseInfo{}, false, nil
	}
	if err != nil {
		return LeaseInfo{}, false, err
	}
	var info LeaseInfo
	if json.Unmarshal(e.Value(), &info) != nil {
		info.Replica = string(e.Value())
	}
	return info, true, nil
}

// use reports each enterprise's rate and recent grants.
func (d *dispenser) use() map[string]EnterpriseInfo {
	d.mu.Lock()
	defer d.mu.Unlock()
	now := d.opts.Now()
	out := make(map[string]EnterpriseInfo, len(d.ents))
	for id, q := range d.ents {
		n := 0
		for _, t := range q.recent {
			if now.Sub(t) <= 10*time.Second {
				n++
			}
		}
		throttled := 0
		for _, t := range q.throttled {
			if now.Sub(t) <= 10*time.Minute {
				throttled++
			}
		}
		out[id] = EnterpriseInfo{Rate: q.rate, Granted10s: n, Waiting: q.waiting.Len(),
			GuardMs: float64(d.guard(q, now)) / float64(time.Millisecond), Throttled10m: throttled,
			MaxWindow1m: q.audit.maxWindow(now), ThrottledTotal: q.audit.throttled}
	}
	// The history of the busiest enterprises only: the lease is one KV value,
	// rewritten at every renewal, and must stay far below NATS's largest
	// message whatever the number of enterprises.
	type busy struct {
		id    string
		total int
	}
	var busiest []busy
	for id, q := range d.ents {
		granted, _, _ := q.history.windows(now)
		total := 0
		for _, g := range granted {
			total += g
		}
		if total > 0 {
			busiest = append(busiest, busy{id, total})
		}
	}
	sort.Slice(busiest, func(i, j int) bool { return busiest[i].total > busiest[j].total })
	for _, b := range busiest[:min(len(busiest), HistoryEnterprises)] {
		e := out[b.id]
		e.Granted5m, e.Throttled5m, _ = d.ents[b.id].history.windows(now)
		out[b.id] = e
	}
	return out
}

// HistoryEnterprises: how many enterprises, the busiest, have their history
// in the lease (about 100 bytes each).
const HistoryEnterprises = 50

// Use is each enterprise's use as this replica's dispenser counts it (what
// it writes in its lease), and since when it dispenses; nil while this
// replica does not dispense.
func (c *Cluster) Use() (since time.Time, use map[string]EnterpriseInfo) {
	c.mu.Lock()
	d := c.disp
	c.mu.Unlock()
	if d == nil {
		return time.Time{}, nil
	}
	return d.since, d.use()
}
