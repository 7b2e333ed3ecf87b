package ratelimit_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/xygroup/xygroup/worker/ratelimit"
	wt "github.com/xygroup/xygroup/worker/workertest"
)

// A grant whose reply is lost does not lose the call: the request times out and
// Wait asks again. Here the test is the dispenser (it holds the lease, so no
// limiter becomes one) and never answers the first request.
func TestWaitAsksAgainAfterALostReply(t *testing.T) {
	srv := wt.StartNATS(t)
	nc := wt.Connect(t, srv)
	js := wt.JetStream(t, nc)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: ratelimit.Bucket, History: 1, TTL: 3 * time.Second,
		Storage: jetstream.MemoryStorage})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Create(ctx, "dispenser", []byte(`{"replica":"test"}`)); err != nil {
		t.Fatal(err)
	}
	go func() { // keep the lease
		for ctx.Err() == nil {
			_, _ = kv.Put(ctx, "dispenser", []byte(`{"replica":"test"}`))
			time.Sleep(500 * time.Millisecond)
		}
	}()
	var requests atomic.Int64
	if _, err := nc.Subscribe(ratelimit.SubjectGrant, func(m *nats.Msg) {
		if requests.Add(1) == 1 {
			return // this reply is lost
		}
		_ = m.Respond([]byte(`{"ok":true}`))
	}); err != nil {
		t.Fatal(err)
	}
	lim, err := ratelimit.NewCluster(ctx, wt.Connect(t, srv), ratelimit.Options{Name: "requester", MaxQueueWait: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := lim.Wait(ctx, "e", ratelimit.Live); err != nil {
		t.Fatalf("no grant after a lost reply: %v", err)
	}
	st := lim.Stats()
	t.Logf("granted after %v: %d requests sent, %d grants, dispenser here: %v", time.Since(start).Round(time.Millisecond),
		st.Requests, st.Grants, st.Dispensing)
	if st.Requests != 2 || st.Grants != 1 || requests.Load() != 2 || st.Dispensing {
		t.Fatalf("want the lost request asked again once: %+v, %d requests seen", st, requests.Load())
	}
}
