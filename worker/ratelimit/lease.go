package ratelimit

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// LeaseInfo is what a shard's dispenser writes in its lease: who it is and,
// per enterprise, its rate and the grants of the last ten seconds. Dispenser
// merges the shards' leases into one.
type LeaseInfo struct {
	Replica     string                    `json:"replica"`
	Since       time.Time                 `json:"since"`
	Enterprises map[string]EnterpriseInfo `json:"enterprises,omitempty"`
	// WindowsEnd is when the enterprises' last complete ten-second window ended.
	WindowsEnd time.Time `json:"windowsEnd,omitzero"`
	// Shard and Shards: the lease's shard, of how many. (An earlier
	// version's single dispenser writes no Shards.)
	Shard  int `json:"shard,omitempty"`
	Shards int `json:"shards,omitempty"`
	// DispenserID names the dispenser that wrote the lease (as in the places
	// it gives): a renewal whose answer was lost is recognised as its own.
	DispenserID string `json:"dispenserId,omitempty"`
	// Handover: the state the shard's next dispenser starts from (the
	// enterprises whose learned guard is above its floor).
	Handover map[string]Handover `json:"handover,omitempty"`
	// Dispensers (merged by Dispenser only): each replica's shards; Vacant:
	// the shards without a dispenser.
	Dispensers map[string][]int `json:"dispensers,omitempty"`
	Vacant     []int            `json:"vacant,omitempty"`
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

// Guards returns each enterprise's guard now, for the shards this replica
// dispenses (nil when none): the enterprises it has seen, and the known ones
// of its shards it has not, at the floor.
func (c *Cluster) Guards(known ...string) map[string]time.Duration {
	var ds []*dispenser
	for _, h := range c.heldShards() {
		ds = append(ds, h.disp)
	}
	if len(ds) == 0 {
		return nil
	}
	out := map[string]time.Duration{}
	for _, id := range known {
		if c.Dispenses(id) {
			out[id] = c.opts.Guard
		}
	}
	for _, d := range ds {
		d.mu.Lock()
		now := d.opts.Now()
		for id, q := range d.ents {
			out[id] = d.guard(q, now)
		}
		d.mu.Unlock()
	}
	return out
}

// Dispenser reads the dispensers' leases, merged: who dispenses (Replica
// names each replica and its number of shards, Dispensers their shards), and
// each enterprise's use of its budget. ok is false when no shard has a
// dispenser. From an earlier version's single dispenser, its lease as it is.
func Dispenser(ctx context.Context, js jetstream.JetStream) (LeaseInfo, bool, error) {
	kv, err := js.KeyValue(ctx, Bucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return LeaseInfo{}, false, nil
	}
	if err != nil {
		return LeaseInfo{}, false, err
	}
	e, err := kv.Get(ctx, legacyKey)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return LeaseInfo{}, false, nil
	}
	if err != nil {
		return LeaseInfo{}, false, err
	}
	var fence LeaseInfo
	if json.Unmarshal(e.Value(), &fence) != nil {
		fence.Replica = string(e.Value())
	}
	if fence.Shards == 0 {
		return fence, true, nil
	}
	var leases []LeaseInfo
	merged := LeaseInfo{Shards: fence.Shards, Enterprises: map[string]EnterpriseInfo{}, Dispensers: map[string][]int{}}
	for n := range fence.Shards {
		e, err := kv.Get(ctx, shardKey(n))
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			merged.Vacant = append(merged.Vacant, n)
			continue
		}
		if err != nil {
			return LeaseInfo{}, false, fmt.Errorf("rate-limit lease of shard %d: %w", n, err)
		}
		var info LeaseInfo
		if json.Unmarshal(e.Value(), &info) != nil {
			continue
		}
		leases = append(leases, info)
		merged.Dispensers[info.Replica] = append(merged.Dispensers[info.Replica], n)
		if merged.Since.IsZero() || info.Since.Before(merged.Since) {
			merged.Since = info.Since
		}
		if info.WindowsEnd.After(merged.WindowsEnd) {
			merged.WindowsEnd = info.WindowsEnd
		}
	}
	if len(leases) == 0 {
		return merged, false, nil
	}
	for _, info := range leases {
		// Histories end at the latest window: one written just before a
		// window's end moves one window on.
		shift := int(merged.WindowsEnd.Sub(info.WindowsEnd) / windowLength)
		for id, ent := range info.Enterprises {
			if shift > 0 {
				ent.Granted5m, ent.Throttled5m = shiftWindows(ent.Granted5m, shift), shiftWindows(ent.Throttled5m, shift)
			}
			merged.Enterprises[id] = ent
		}
	}
	names := make([]string, 0, len(merged.Dispensers))
	for name := range merged.Dispensers {
		names = append(names, name)
	}
	sort.Strings(names)
	for i, name := range names {
		if i > 0 {
			merged.Replica += ", "
		}
		merged.Replica += fmt.Sprintf("%s (%d of %d shards)", name, len(merged.Dispensers[name]), merged.Shards)
	}
	return merged, true, nil
}

// shiftWindows moves windows k on: the oldest k drop out, k empty ones (not
// counted yet) come last.
func shiftWindows(w []int, k int) []int {
	if len(w) == 0 {
		return w
	}
	k = min(k, len(w))
	return append(append([]int(nil), w[k:]...), make([]int, k)...)
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

// Dispensed is an enterprise's use as its shard's dispenser on this replica
// counts it (what it writes in its lease), and since when that dispenser
// dispenses: a new one counts again from zero.
type Dispensed struct {
	Since time.Time
	EnterpriseInfo
}

// Use is the use of every enterprise whose shard this replica dispenses
// (empty while it dispenses none).
func (c *Cluster) Use() map[string]Dispensed {
	var ds []*dispenser
	for _, h := range c.heldShards() {
		ds = append(ds, h.disp)
	}
	out := map[string]Dispensed{}
	for _, d := range ds {
		for id, e := range d.use() {
			out[id] = Dispensed{Since: d.since, EnterpriseInfo: e}
		}
	}
	return out
}
