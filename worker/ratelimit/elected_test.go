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

// A dispenser cut off from the cluster answers nothing. A request waiting on
// it is sent to the shard's next dispenser as soon as that one is elected,
// not after its timeout: here the test holds the shard's lease and swallows
// the request, then lets the lease expire; the requester, the only replica,
// takes the shard, and with MaxQueueWait at ten minutes only the new
// dispenser's announcement can get the request its grant within the test.
func TestRequestGoesToTheNewDispenserAtOnce(t *testing.T) {
	srv := wt.StartNATS(t)
	nc := wt.Connect(t, srv)
	js := wt.JetStream(t, nc)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: ratelimit.Bucket, History: 1, TTL: 3 * time.Second,
		Storage: jetstream.MemoryStorage})
	if err != nil {
		t.Fatal(err)
	}
	lease := []byte(`{"replica":"silent","shard":0,"shards":1}`)
	if _, err := kv.Create(ctx, "shard.0", lease); err != nil {
		t.Fatal(err)
	}
	var cut atomic.Bool
	go func() { // keep the lease until cut off
		for ctx.Err() == nil && !cut.Load() {
			_, _ = kv.Put(ctx, "shard.0", lease)
			time.Sleep(500 * time.Millisecond)
		}
	}()
	var swallowed atomic.Int64
	silent, err := nc.Subscribe("xygroup.limiter.grant.1.0", func(*nats.Msg) { swallowed.Add(1) })
	if err != nil {
		t.Fatal(err)
	}
	lim, err := ratelimit.NewCluster(ctx, wt.Connect(t, srv), ratelimit.Options{Name: "requester", Shards: 1, MaxQueueWait: 10 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- lim.Wait(ctx, "e", ratelimit.Live) }()
	await(t, 30*time.Second, "the request reaching the silent dispenser", func() bool { return swallowed.Load() == 1 })
	cut.Store(true)
	if err := silent.Unsubscribe(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("no grant from the new dispenser: %v", err)
	}
	st := lim.Stats()
	t.Logf("%+v", st)
	if swallowed.Load() != 1 || st.Resent != 1 || st.Requests != 2 || st.Grants != 1 || st.Elections != 1 {
		t.Fatalf("want the request sent once to the silent dispenser and once to the new one: %+v, %d swallowed", st, swallowed.Load())
	}
}
