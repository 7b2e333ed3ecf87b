package ratelimit

import (
	"strconv"
	"sync"
	"time"
)

// lateTransit: how much longer than usual a grant may take on its way (the
// round trip less its time in the dispenser's queue) and still be used. The
// dispenser's spacing absorbs Guard - maxCatchUp of variation between a grant
// and its call's arrival at the API; a grant held on its way longer than this
// (a pause of the requesting process or of NATS) may arrive together with the
// enterprise's next grants, elsewhere, and is not used.
const lateTransit = 15 * time.Millisecond

// transitTimes keeps the shortest transit of the last 10 to 20 seconds: the
// usual time of a round trip on this network, against which a late grant is
// told apart. A network that is slow throughout raises it, so only variation
// counts.
type transitTimes struct {
	mu        sync.Mutex
	since     time.Time
	cur, prev time.Duration // shortest in the current and the previous period (0: none)
	lateSince time.Time     // the first of the grants late in a row (zero: the last was not)
}

const transitPeriod = 10 * time.Second

// lateShift: grants late in a row for this long are no pause (a garbage
// collection, a blip), but a network that got slower: its transit becomes
// the usual one, rather than every grant be spent unused for a period.
const lateShift = 250 * time.Millisecond

// late records a grant's transit and reports whether it took longer than
// usual by more than lateTransit.
func (t *transitTimes) late(transit time.Duration) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := time.Now()
	if now.Sub(t.since) >= transitPeriod {
		t.prev, t.cur, t.since = t.cur, 0, now
	}
	if t.cur == 0 || transit < t.cur {
		t.cur = max(transit, 1)
	}
	usual := t.cur
	if t.prev != 0 && t.prev < usual {
		usual = t.prev
	}
	if transit <= usual+lateTransit {
		t.lateSince = time.Time{}
		return false
	}
	if t.lateSince.IsZero() {
		t.lateSince = now
	}
	if now.Sub(t.lateSince) >= lateShift {
		t.cur, t.prev, t.since, t.lateSince = transit, 0, now, time.Time{}
		return false
	}
	return true
}

// seed takes a first round trip, measured before any grant came.
func (t *transitTimes) seed(rtt time.Duration) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.cur == 0 {
		t.cur, t.since = max(rtt, 1), time.Now()
	}
}

// lead is the time this replica usually takes from a grant's dispatch to its
// request's departure: half the usual round trip to the dispenser (the
// grant's way here), and one round trip for the write that marks the call
// as sent before it leaves. A replica farther from NATS has a longer one;
// the dispenser spaces departures, so it grants that much earlier.
func (t *transitTimes) lead() time.Duration {
	t.mu.Lock()
	defer t.mu.Unlock()
	usual := t.cur
	if t.prev != 0 && (usual == 0 || t.prev < usual) {
		usual = t.prev
	}
	return min(usual*3/2, maxLead)
}

// reply is a grant (ok) or "ask again", with the request's place and, for a
// grant, how long the request waited in the queue.
func (d *dispenser) reply(ok bool, p *pending, queued time.Duration) []byte {
	b := make([]byte, 0, 64)
	if ok {
		b = append(b, `{"ok":true,"q":`...)
		b = strconv.AppendInt(b, queued.Microseconds(), 10)
	} else {
		b = append(b, `{"ok":false`...)
	}
	b = append(b, `,"d":"`...)
	b = append(b, d.id...)
	b = append(b, `","s":`...)
	b = strconv.AppendUint(b, p.seq, 10)
	return append(b, '}')
}
