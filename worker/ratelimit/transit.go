package ratelimit

import (
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// transitTimes learns, from this replica's own grants, the two figures its
// departure windows need (see Departure and the package documentation):
//
//   - base: the shortest transit (a grant's round trip less its time in the
//     dispenser's queue) of the last 10 to 20 seconds. Each way takes at
//     least base/2: the two ways' shortest times are taken to be equal, as
//     NTP takes them. A grant's decision then lies between its request's
//     sending plus its queue time plus base/2, and its arrival less base/2:
//     an interval as wide as the grant's transit beyond base.
//   - lead: the usual time from the latest the dispenser can have decided a
//     grant to its request being ready to leave (the grant's way here, the
//     "sent" mark, this process's scheduling): the second longest of the
//     last 64, so that a busy host (a slow mark, a late wake-up) rarely
//     spends a grant unused, and one pause does not set it. A longer lead
//     costs no budget: a grant that is ready early waits for its departure.
//     A replica farther from NATS, or whose mark takes longer, has a longer
//     one; requests carry it and the dispenser grants that much before the
//     departure it spaces.
type transitTimes struct {
	mu        sync.Mutex
	since     time.Time
	cur, prev time.Duration // shortest in the current and the previous period (0: none)
	// A run of grants whose windows were empty: when it began, how many, and
	// the shortest transit among them.
	lateSince time.Time
	lateN     int
	lateMin   time.Duration

	samples [leadSamples]time.Duration // readiness of the last grants, a ring
	n       int                        // samples taken
	lead    time.Duration              // the second longest of the samples, or seed before any
}

const (
	transitPeriod = 10 * time.Second
	// lateShift: grants with empty windows in a row for this long (and at
	// least lateRun of them) are no pause of this process or of NATS, but a
	// network that got slower: the shortest of them becomes the base. The
	// grant being judged is judged against it too, so a grant held on its way
	// longer than the others of the run is still not used.
	lateShift = 250 * time.Millisecond
	lateRun   = 3

	leadSamples = 64
	// maxLead bounds the lead a requester may claim (and the dispenser
	// accepts): a replica 200 ms from its dispenser still sends on time.
	maxLead = 500 * time.Millisecond
)

// window is the departure window of a grant requested at sent, answered at
// recv after queued in the dispenser's queue, whose request carried lead and
// whose reply gave budget. ok is false when the window is empty: the grant
// spent more of the budget on its way than the budget holds.
func (t *transitTimes) window(stale *atomic.Int64, sent, recv time.Time, queued, lead, budget time.Duration) (d Departure, ok bool) {
	transit := max(recv.Sub(sent)-queued, 0)
	t.mu.Lock()
	defer t.mu.Unlock()
	if recv.Sub(t.since) >= transitPeriod {
		t.prev, t.cur, t.since = t.cur, 0, recv
	}
	if t.cur == 0 || transit < t.cur {
		t.cur = max(transit, 1)
	}
	base := t.cur
	if t.prev != 0 && t.prev < base {
		base = t.prev
	}
	if transit-base > budget {
		if t.lateSince.IsZero() {
			t.lateSince, t.lateN, t.lateMin = recv, 0, transit
		}
		t.lateN++
		t.lateMin = min(t.lateMin, transit)
		if recv.Sub(t.lateSince) >= lateShift && t.lateN >= lateRun {
			t.cur, t.prev, t.since = t.lateMin, 0, recv
			base = t.lateMin
			t.lateSince = time.Time{}
		}
	} else {
		t.lateSince = time.Time{}
	}
	decidedFrom := sent.Add(queued + base/2)
	decidedBy := recv.Add(-base / 2)
	d = Departure{From: decidedBy.Add(lead), By: decidedFrom.Add(lead + budget), decided: decidedBy, t: t, stale: stale}
	return d, transit-base <= budget
}

// ready records how long after decided a request was ready to leave.
func (t *transitTimes) ready(took time.Duration) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.samples[t.n%leadSamples] = max(took, 0)
	t.n++
	// The percentile is taken again every few samples: cheap at thousands
	// of grants a second.
	if t.n <= 8 || t.n%8 == 0 {
		s := slices.Clone(t.samples[:min(t.n, leadSamples)])
		slices.Sort(s)
		t.lead = min(s[max(len(s)-2, 0)], maxLead)
	}
}

// seed takes a first round trip, measured before any grant came: until its
// first samples, a replica's lead is half of it for the grant's way and one
// round trip for the mark.
func (t *transitTimes) seed(rtt time.Duration) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.cur == 0 {
		t.cur, t.since = max(rtt, 1), time.Now()
	}
	if t.n == 0 {
		t.lead = min(rtt*3/2, maxLead)
	}
}

// currentLead is the lead the next request carries.
func (t *transitTimes) currentLead() time.Duration {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.lead
}
