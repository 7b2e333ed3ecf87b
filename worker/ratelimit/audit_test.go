package ratelimit

import (
	"testing"
	"time"
)

// The sliding second with the most departures is found whatever the spacing,
// and forgotten a minute later.
func TestAuditMaxWindow(t *testing.T) {
	start := time.Date(2026, 11, 26, 12, 0, 0, 300_000_000, time.UTC)
	for _, tc := range []struct {
		spacing time.Duration
		want    int
	}{
		{51250 * time.Microsecond, 20}, // 20/s with the 25 ms guard: 20 span 973.75 ms
		{50 * time.Millisecond, 20},    // the 21st is a whole second after the 1st
		{49 * time.Millisecond, 21},
		{40 * time.Millisecond, 25},
		{2 * time.Second, 1},
	} {
		var a audit
		for i := range 200 {
			a.departed(start.Add(time.Duration(i) * tc.spacing))
		}
		end := start.Add(199 * tc.spacing)
		if got := a.maxWindow(end); got != tc.want {
			t.Errorf("spacing %v: max %d in a second, want %d", tc.spacing, got, tc.want)
		}
		if len(a.window) > tc.want+1 {
			t.Errorf("spacing %v: %d departures kept, more than a second's", tc.spacing, len(a.window))
		}
		if got := a.maxWindow(end.Add(62 * time.Second)); got != 0 {
			t.Errorf("spacing %v: %d a minute after the last departure, want 0", tc.spacing, got)
		}
	}

	// A burst among spaced departures: the burst's second counts it; once it
	// is a minute old (counted in whole seconds: up to a second more) it no
	// longer does.
	var a audit
	for i := range 10 {
		a.departed(start.Add(time.Duration(i) * 100 * time.Millisecond))
	}
	burst := start.Add(5 * time.Second)
	for i := range 7 {
		a.departed(burst.Add(time.Duration(i) * time.Millisecond))
	}
	for i := range 100 {
		a.departed(burst.Add(time.Second + time.Duration(i)*500*time.Millisecond))
	}
	now := burst.Add(51 * time.Second)
	if got := a.maxWindow(now); got != 10 {
		t.Errorf("max %d, want 10 (the first second)", got)
	}
	if got := a.maxWindow(start.Add(62 * time.Second)); got != 7 {
		t.Errorf("max %d once the first second is a minute old, want 7 (the burst)", got)
	}
	if got := a.maxWindow(burst.Add(62 * time.Second)); got != 2 {
		t.Errorf("max %d once the burst is a minute old, want 2", got)
	}

	// A departure out of order (a shorter lead) is counted in its place: the
	// seconds ending after it hold one more.
	var b audit
	for i := range 5 {
		b.departed(start.Add(time.Duration(i) * 200 * time.Millisecond)) // 0 .. 800 ms
	}
	b.departed(start.Add(100 * time.Millisecond))
	if got := b.maxWindow(start); got != 6 {
		t.Errorf("max %d with one out of order, want 6", got)
	}
}
