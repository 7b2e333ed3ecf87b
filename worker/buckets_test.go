package worker_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/xygroup/xygroup/worker"
	"github.com/xygroup/xygroup/worker/ratelimit"
	wt "github.com/xygroup/xygroup/worker/workertest"
	"github.com/xygroup/xygroup/xylink/sandbox"
)

// Buckets an operator created with other settings are used as they are, and
// each difference is logged, as for streams.
func TestExistingBucketsAreReportedNotOverwritten(t *testing.T) {
	srv := wt.StartNATS(t)
	js := wt.JetStream(t, wt.Connect(t, srv))
	ctx := context.Background()
	if _, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: worker.BucketMeetings, History: 5, TTL: time.Hour}); err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: ratelimit.Bucket, History: 3, TTL: 3 * time.Second,
		Storage: jetstream.MemoryStorage}); err != nil {
		t.Fatal(err)
	}
	var logs wt.SyncBuffer
	w := wt.StartWorker(t, srv, wt.Client(t, wt.StartSandbox(t, sandbox.Config{})), worker.WithLogger(zerolog.New(&logs)))
	wt.Eventually(t, 30*time.Second, func() bool { return w.Checks()["streams"]() == nil }, "the worker's streams check passing")
	out := logs.String()
	for _, want := range []string{
		`"bucket":"xygroup-meetings","difference":"history 5 (expected 1)"`,
		`"bucket":"xygroup-meetings","difference":"ttl 1h0m0s (expected 0s)"`,
		`"bucket":"xygroup-limiter","difference":"history 3 (expected 1)"`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("difference not logged: %s\n%s", want, out)
		}
	}
	kv, err := js.KeyValue(ctx, worker.BucketMeetings)
	if err != nil {
		t.Fatal(err)
	}
	if st, _ := kv.Status(ctx); st.History() != 5 || st.TTL() != time.Hour {
		t.Fatalf("the operator's bucket was changed: history %d, ttl %v", st.History(), st.TTL())
	}
}

// On a three-node cluster with --stream-replicas 3, a bucket or the parked
// stream that an operator created with one replica keeps acknowledged state on
// one node: the worker refuses to start, saying which and how to fix it.
func TestFewerReplicasThanAskedRefuseToStart(t *testing.T) {
	nc := wt.StartCluster(t)
	js := wt.JetStream(t, nc)
	client := wt.Client(t, wt.StartSandbox(t, sandbox.Config{}))
	ctx := context.Background()
	run := func() (string, error) {
		var logs wt.SyncBuffer
		w, err := worker.New(nc, client, client, worker.WithDefaultEnterprise(wt.Enterprise),
			worker.WithStreams(worker.StreamSettings{Replicas: 3}), worker.WithLogger(zerolog.New(&logs)))
		if err != nil {
			t.Fatal(err)
		}
		rctx, cancel := context.WithTimeout(ctx, 60*time.Second)
		defer cancel()
		err = w.Run(rctx)
		if rctx.Err() != nil {
			t.Fatalf("the worker ran until its context ended (err %v):\n%s", err, logs.String())
		}
		return logs.String(), err
	}

	parked := worker.StreamSettings{Replicas: 1}.ParkedStream()
	if _, err := js.CreateStream(ctx, parked); err != nil {
		t.Fatal(err)
	}
	logs, err := run()
	t.Logf("parked stream R1: %v", err)
	for _, want := range []string{"stream XYGROUP_PARKED has 1 replica(s)", "--stream-replicas", "asks for 3"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("want an error with %q, got %v", want, err)
		}
	}
	if !strings.Contains(logs, "refusing to start") {
		t.Fatalf("the refusal is not logged:\n%s", logs)
	}

	if err := js.DeleteStream(ctx, worker.StreamParked); err != nil {
		t.Fatal(err)
	}
	_ = js.DeleteKeyValue(ctx, worker.BucketCommands) // not created: the worker stopped at the parked stream
	if _, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: worker.BucketCommands, Replicas: 1}); err != nil {
		t.Fatal(err)
	}
	_, err = run()
	t.Logf("commands bucket R1: %v", err)
	if err == nil || !strings.Contains(err.Error(), "bucket xygroup-commands has 1 replica(s)") ||
		!strings.Contains(err.Error(), "nats stream edit KV_xygroup-commands --replicas 3") {
		t.Fatalf("want the commands bucket refused, got %v", err)
	}
}
