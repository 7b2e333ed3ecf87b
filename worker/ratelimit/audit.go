package ratelimit

import (
	"math"
	"time"
)

// audit is the dispenser's own record of an enterprise's departures: the
// most it let leave in any sliding second of the last minute, so that an
// operator can check the limit without trusting the requesters, and the
// rate-limit answers reported for it.
//
// Memory is bounded whatever the number of enterprises and their rates: the
// departures of the last second (at most the rate, plus one), and one
// maximum per second for the last minute.
type audit struct {
	// window holds the departures of the last second before the latest one,
	// in order; the sliding second with the most departures ends at one of
	// them, so counting at each departure finds it.
	window []time.Time
	// maxima[i] is the most departures in a second that ended in Unix second
	// secs[i]; the ring covers auditSeconds seconds (366 bytes).
	maxima [auditSeconds]uint16
	secs   [auditSeconds]uint32
	// throttled counts the rate-limit answers reported since the dispenser
	// began serving the enterprise.
	throttled int
}

// auditSeconds: the last minute, and the second that is starting.
const auditSeconds = 61

// departed records a departure scheduled at t. Departures come in order
// (each is at least the spacing less maxCatchUp after the previous one); one
// that does not is put in its place, and the seconds after it counted again.
func (a *audit) departed(t time.Time) {
	latest := t
	if n := len(a.window); n > 0 && a.window[n-1].After(t) {
		latest = a.window[n-1]
	}
	cut := 0
	for cut < len(a.window) && latest.Sub(a.window[cut]) >= time.Second {
		cut++
	}
	// Re-slicing from the front: append copies only the live departures
	// when it needs room, so the window stays about a second long.
	a.window = a.window[cut:]
	i := len(a.window)
	for i > 0 && a.window[i-1].After(t) {
		i--
	}
	a.window = append(a.window, time.Time{})
	copy(a.window[i+1:], a.window[i:])
	a.window[i] = t
	// The second that ends at each departure from t on holds it and the
	// departures before it less than a second earlier.
	for j := i; j < len(a.window); j++ {
		first := 0
		for first < j && a.window[j].Sub(a.window[first]) >= time.Second {
			first++
		}
		a.note(a.window[j], j-first+1)
	}
}

func (a *audit) note(end time.Time, n int) {
	sec := uint32(end.Unix())
	slot := sec % auditSeconds
	if a.secs[slot] != sec {
		a.secs[slot], a.maxima[slot] = sec, 0
	}
	a.maxima[slot] = max(a.maxima[slot], uint16(min(n, math.MaxUint16)))
}

// maxWindow is the most departures in any sliding second that ended within
// the last minute before now, counted in whole seconds (up to a second more),
// or ends after it: departures are scheduled up to a lead ahead.
func (a *audit) maxWindow(now time.Time) int {
	from := uint32(now.Add(-time.Minute).Unix())
	m := 0
	for i, sec := range a.secs {
		if sec >= from {
			m = max(m, int(a.maxima[i]))
		}
	}
	return m
}
