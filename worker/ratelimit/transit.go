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
}

const transitPeriod = 10 * time.Second

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
	return transit > usual+lateTransit
}

// grantReplyOK is a grant, saying how long its request waited in the queue.
func grantReplyOK(queued time.Duration) []byte {
	b := make([]byte, 0, 32)
	b = append(b, `{"ok":true,"q":`...)
	b = strconv.AppendInt(b, queued.Microseconds(), 10)
	return append(b, '}')
}
