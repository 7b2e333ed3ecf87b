package ratelimit_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/xygroup/xygroup/worker/ratelimit"
	wt "github.com/xygroup/xygroup/worker/workertest"
)

// A request that waits longer than MaxQueueWait is told to ask again then, even
// when nothing else wakes the dispenser.
func TestAskAgainAfterMaxQueueWait(t *testing.T) {
	srv := wt.StartNATS(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	lim, err := ratelimit.NewCluster(ctx, wt.Connect(t, srv), ratelimit.Options{Name: "only",
		Rate: func(string) float64 { return 0.2 }, MaxQueueWait: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	await(t, 5*time.Second, "a dispenser", func() bool { return lim.Stats().Dispensing })
	nc := wt.Connect(t, srv)
	body, _ := json.Marshal(map[string]any{"e": "slow", "p": ratelimit.Live, "r": 0.2})
	ask := func() (bool, time.Duration) {
		start := time.Now()
		m, err := nc.Request(ratelimit.SubjectGrant, body, 3*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		var r struct{ OK bool }
		if err := json.Unmarshal(m.Data, &r); err != nil {
			t.Fatal(err)
		}
		return r.OK, time.Since(start)
	}
	if ok, _ := ask(); !ok {
		t.Fatal("first request: no grant")
	}
	// The next grant is 5 s away: the second request is answered "ask again"
	// once it has waited 300 ms.
	ok, took := ask()
	if ok {
		t.Fatalf("second request granted after %v; want ask again", took)
	}
	if took < 300*time.Millisecond || took > 1500*time.Millisecond {
		t.Fatalf("ask again after %v; want about 300 ms", took)
	}
}
