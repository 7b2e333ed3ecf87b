package ratelimit

import (
	"context"
	"testing"
	"time"
)

// Grants that reach a replica together (the dispenser spaced them, but the
// replica received them late) leave it spaced: no second holds more than the
// rate of one replica's calls. A lower bound on elapsed time, which a loaded
// machine only makes longer.
func TestGrantsLeaveAReplicaSpaced(t *testing.T) {
	c := &Cluster{opts: Options{Rate: func(string) float64 { return 20 }}}
	start := time.Now()
	sent := make([]time.Duration, 0, 21)
	for range 21 {
		if err := c.spaceLocally(context.Background(), "e"); err != nil {
			t.Fatal(err)
		}
		sent = append(sent, time.Since(start))
	}
	for i := 20; i < len(sent); i++ {
		if d := sent[i] - sent[i-20]; d <= time.Second {
			t.Fatalf("calls %d and %d left %v apart: 21 calls in one second at 20/s", i-20, i, d)
		}
	}
	// Another enterprise is not held by the first one's calls: with a context
	// already done, spaceLocally returns an error if it would wait at all.
	done, cancel := context.WithCancel(context.Background())
	cancel()
	if err := c.spaceLocally(done, "f"); err != nil {
		t.Fatalf("another enterprise was held by the first one's calls: %v", err)
	}
}
