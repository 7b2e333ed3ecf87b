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
// when nothing else wakes the dispenser. The next grant is 100 s away and the
// request waits up to 60 s: only the MaxQueueWait timer can answer it.
func TestAskAgainAfterMaxQueueWait(t *testing.T) {
	const rate = 0.01 // one grant per 100 s
	srv := wt.StartNATS(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	lim, err := ratelimit.NewCluster(ctx, wt.Connect(t, srv), ratelimit.Options{Name: "only",
		Rate: func(string) float64 { return rate }, MaxQueueWait: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	await(t, 5*time.Second, "a dispenser", func() bool { return lim.Stats().Dispensing })
	nc := wt.Connect(t, srv)
	body, _ := json.Marshal(map[string]any{"e": "slow", "p": ratelimit.Live, "r": rate})
	ask := func() (bool, time.Duration) {
		start := time.Now()
		m, err := nc.Request(ratelimit.SubjectGrant, body, time.Minute)
		if err != nil {
			t.Fatalf("no answer within a minute: %v", err)
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
	ok, took := ask()
	t.Logf("second request answered after %v", took)
	if ok {
		t.Fatalf("second request granted after %v, before the rate allows; want ask again", took)
	}
	if took < 300*time.Millisecond {
		t.Fatalf("ask again after %v, before MaxQueueWait (300 ms)", took)
	}
}
