package ratelimit

import (
	"testing"
	"time"
)

func TestHistoryWindows(t *testing.T) {
	var h history
	start := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	for i := range 25 { // 25 grants in the first window, 5 per second
		h.add(start.Add(time.Duration(i)*200*time.Millisecond), 0)
	}
	h.add(start.Add(15*time.Second), 0)
	h.add(start.Add(16*time.Second), 1)

	granted, throttled, end := h.windows(start.Add(25 * time.Second))
	if len(granted) != HistoryWindows || len(throttled) != HistoryWindows {
		t.Fatalf("%d and %d windows, want %d", len(granted), len(throttled), HistoryWindows)
	}
	if want := start.Add(20 * time.Second); !end.Equal(want) {
		t.Fatalf("windows end at %v, want %v", end, want)
	}
	if granted[HistoryWindows-2] != 25 || granted[HistoryWindows-1] != 1 || throttled[HistoryWindows-1] != 1 {
		t.Fatalf("last windows %v / %v", granted[HistoryWindows-3:], throttled[HistoryWindows-3:])
	}
	info := EnterpriseInfo{Granted5m: granted, Throttled5m: throttled}
	if w := info.Windows(end); !w[HistoryWindows-1].Start.Equal(start.Add(10*time.Second)) || w[HistoryWindows-1].Throttled != 1 {
		t.Fatalf("last window %+v", w[HistoryWindows-1])
	}

	// Six minutes later every window is empty, and no 429 is reported.
	granted, throttled, _ = h.windows(start.Add(6 * time.Minute))
	for _, g := range granted {
		if g != 0 {
			t.Fatalf("old grants still counted: %v", granted)
		}
	}
	if throttled != nil {
		t.Fatalf("old 429s still counted: %v", throttled)
	}
}
