package ratelimit_test

import (
	"context"
	"encoding/json"
	"slices"
	"testing"
	"time"

	"github.com/xygroup/xygroup/worker/ratelimit"
	wt "github.com/xygroup/xygroup/worker/workertest"
)

// A renewal whose write was applied but whose answer never came leaves the
// dispenser with an old revision: its next renewal fails the
// compare-and-swap. The lease still names this dispenser, so no other
// replica wrote it since: the shard keeps its dispenser (no step-down, no
// election). A lease written by another dispenser is lost at once.
func TestRenewalRecognisesItsOwnLostWrite(t *testing.T) {
	srv := wt.StartNATS(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	lim, err := ratelimit.NewCluster(ctx, wt.Connect(t, srv), ratelimit.Options{Name: "replica-0"})
	if err != nil {
		t.Fatal(err)
	}
	await(t, 30*time.Second, "every shard held", func() bool { return len(lim.HeldShards()) == ratelimit.DefaultShards })
	kv, err := wt.JetStream(t, wt.Connect(t, srv)).KeyValue(ctx, ratelimit.Bucket)
	if err != nil {
		t.Fatal(err)
	}
	elections := lim.Stats().Elections

	// The dispenser's own write, applied without its answer: the same value again.
	e, err := kv.Get(ctx, "shard.0")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, "shard.0", e.Value()); err != nil {
		t.Fatal(err)
	}
	renewals := lim.Stats().Renewals
	await(t, 10*time.Second, "four more rounds of renewals", func() bool {
		return lim.Stats().Renewals >= renewals+4*ratelimit.DefaultShards
	})
	if !slices.Contains(lim.HeldShards(), 0) || lim.Stats().Elections != elections {
		t.Fatalf("after a renewal's lost answer: shards %v, elections %d (was %d); want shard 0 kept, no election",
			lim.HeldShards(), lim.Stats().Elections, elections)
	}

	// Another dispenser's write: the lease is lost.
	e, err = kv.Get(ctx, "shard.0")
	if err != nil {
		t.Fatal(err)
	}
	var info map[string]any
	if err := json.Unmarshal(e.Value(), &info); err != nil {
		t.Fatal(err)
	}
	if info["dispenserId"] == nil {
		t.Fatalf("the lease names no dispenser: %s", e.Value())
	}
	info["dispenserId"] = "another"
	other, _ := json.Marshal(info)
	if _, err := kv.Put(ctx, "shard.0", other); err != nil {
		t.Fatal(err)
	}
	await(t, 10*time.Second, "shard 0 given up", func() bool { return !slices.Contains(lim.HeldShards(), 0) })
}
