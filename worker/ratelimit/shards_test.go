package ratelimit_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/xygroup/xygroup/worker/ratelimit"
	wt "github.com/xygroup/xygroup/worker/workertest"
)

// The shards spread over three replicas (none holds them all, none more
// than its share), the merged lease names every shard's dispenser, and a
// stopped replica's shards are taken over by the others.
func TestShardsSpreadAndAreTakenOver(t *testing.T) {
	reps := startReplicas(t, 3, ratelimit.Options{})
	waitForDispenser(t, reps) // every shard held, at most ceil(16/3) = 6 on one
	for i, r := range reps {
		held := r.lim.HeldShards()
		t.Logf("replica-%d holds %v", i, held)
		if len(held) == 0 || len(held) == ratelimit.DefaultShards {
			t.Fatalf("replica-%d holds %d of %d shards with three replicas up", i, len(held), ratelimit.DefaultShards)
		}
	}
	stopped := reps[0].lim.HeldShards()
	reps[0].cancel()
	took := await(t, 30*time.Second, "the stopped replica's shards taken over", func() bool {
		return len(reps[1].lim.HeldShards())+len(reps[2].lim.HeldShards()) == ratelimit.DefaultShards
	})
	t.Logf("shards %v of the stopped replica taken over within %v; now %v and %v", stopped, took.Round(time.Millisecond),
		reps[1].lim.HeldShards(), reps[2].lim.HeldShards())
	if len(reps[0].lim.HeldShards()) != 0 {
		t.Fatalf("the stopped replica still holds %v", reps[0].lim.HeldShards())
	}
}

// A guard widened by rate-limit answers survives its dispenser: the
// replica dispensing the enterprise's shard is cut off (its connection
// closed, no last word), and the next dispenser of the shard starts with the
// widened guard it read from the lease. The guard does not narrow meanwhile
// (GuardQuiet an hour).
func TestGuardSurvivesFailover(t *testing.T) {
	const floor, step = 25 * time.Millisecond, 50 * time.Millisecond
	srv := wt.StartNATS(t)
	js := wt.JetStream(t, wt.Connect(t, srv))
	opts := ratelimit.Options{GuardStep: step, GuardCooldown: time.Minute, GuardQuiet: time.Hour}
	var lims []*ratelimit.Cluster
	var conns []*nats.Conn
	var cancels []context.CancelFunc
	var reps []*replica
	for i := range 2 {
		ctx, cancel := context.WithCancel(context.Background())
		t.Cleanup(cancel)
		o := opts
		o.Name = fmt.Sprintf("replica-%d", i)
		nc := wt.Connect(t, srv)
		lim, err := ratelimit.NewCluster(ctx, nc, o)
		if err != nil {
			t.Fatal(err)
		}
		lims, conns, cancels = append(lims, lim), append(conns, nc), append(cancels, cancel)
		reps = append(reps, &replica{lim: lim, cancel: cancel})
	}
	waitForDispenser(t, reps)
	holder := 0
	if !lims[0].Dispenses("e") {
		holder = 1
	}
	other := 1 - holder
	// Reported from the other replica until the dispenser has it (a report
	// is a plain publish); the cooldown counts them all as one.
	widened := func(lim *ratelimit.Cluster) bool { return lim.Guards()["e"] == floor+step }
	for deadline := time.Now().Add(30 * time.Second); !widened(lims[holder]); {
		if time.Now().After(deadline) {
			t.Fatal("the report never reached the dispenser")
		}
		lims[other].Throttled("e")
		for sent := time.Now(); !widened(lims[holder]) && time.Since(sent) < time.Second; {
			time.Sleep(10 * time.Millisecond)
		}
	}
	// In the lease (the next renewal carries it).
	await(t, 10*time.Second, "the widened guard in the lease", func() bool {
		info, ok, err := ratelimit.Dispenser(context.Background(), js)
		return err == nil && ok && info.Enterprises["e"].GuardMs == float64(floor+step)/float64(time.Millisecond)
	})
	conns[holder].Close() // cut off: no last lease write
	cancels[holder]()
	took := await(t, 30*time.Second, "the other replica dispensing e's shard", func() bool { return lims[other].Dispenses("e") })
	g := lims[other].Guards()["e"]
	t.Logf("e's shard taken over %v after its dispenser was cut off; guard there %v", took.Round(time.Millisecond), g)
	if g != floor+step {
		t.Fatalf("the next dispenser starts with a guard of %v, want the widened %v", g, floor+step)
	}
}

// AwaitDispensers returns once every shard of a cold-started cluster has a
// dispenser: a grant asked for then is answered at once.
func TestAwaitDispensersOnAColdStart(t *testing.T) {
	reps := startReplicas(t, 2, ratelimit.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for _, r := range reps {
		if err := r.lim.AwaitDispensers(ctx); err != nil {
			t.Fatalf("no dispenser for every shard within 20 s: %v", err)
		}
	}
	if held := len(reps[0].lim.HeldShards()) + len(reps[1].lim.HeldShards()); held != ratelimit.DefaultShards {
		t.Fatalf("%d of %d shards held once AwaitDispensers returned", held, ratelimit.DefaultShards)
	}
	before := reps[1].lim.Stats()
	if err := reps[1].lim.Wait(ctx, "cold", ratelimit.Live); err != nil {
		t.Fatal(err)
	}
	if after := reps[1].lim.Stats(); after.Requests-before.Requests != 1 {
		t.Fatalf("%d requests for the first grant, want 1 (no dispenser missing)", after.Requests-before.Requests)
	}
}
