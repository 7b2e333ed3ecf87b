package worker_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/xygroup/xygroup/worker"
	"github.com/xygroup/xygroup/worker/ratelimit"
	wt "github.com/xygroup/xygroup/worker/workertest"
	"github.com/xygroup/xygroup/xylink/sandbox"
)

// A 1 MiB message of junk is refused to its publisher by every stream and
// bucket the worker creates, and each of them is bounded in bytes: nothing a
// publisher sends can grow a store beyond what the worker itself writes.
func TestJunkAtOneMiBIsRefusedAtPublish(t *testing.T) {
	srv := wt.StartNATS(t)
	nc := wt.Connect(t, srv)
	js := wt.JetStream(t, nc)
	sb := wt.StartSandbox(t, sandbox.Config{Rate: 1e6})
	wt.StartWorker(t, srv, wt.Client(t, sb))
	buckets := []string{worker.BucketCommands, worker.BucketMeetings, worker.BucketBreakers, worker.BucketReplicas, ratelimit.Bucket}
	for _, b := range buckets {
		wt.AwaitStream(t, js, "KV_"+b)
	}
	ctx := context.Background()
	junk := bytes.Repeat([]byte("x"), 1<<20)
	refused := func(what, subject string) {
		t.Helper()
		_, err := js.PublishMsg(ctx, &nats.Msg{Subject: subject, Data: junk})
		if err == nil {
			t.Errorf("%s: 1 MiB of junk on %s was stored", what, subject)
			return
		}
		if !errors.Is(err, jetstream.ErrStreamMessageExceedsMaximum) && !errors.Is(err, nats.ErrMaxPayload) &&
			!strings.Contains(err.Error(), "maximum") {
			t.Errorf("%s: refused for another reason: %v", what, err)
		}
	}
	refused("commands stream", worker.SubjectCreate)
	refused("events stream", worker.SubjectFailed+".invalid_command")
	refused("events stream", worker.SubjectCreated)
	refused("parked stream", "xygroup.parked.junk")
	for _, b := range buckets {
		refused("bucket "+b, "$KV."+b+".junk")
	}
	for _, name := range append([]string{worker.StreamCommands, worker.StreamEvents, worker.StreamParked}, func() []string {
		var out []string
		for _, b := range buckets {
			out = append(out, "KV_"+b)
		}
		return out
	}()...) {
		s, err := js.Stream(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		cfg := s.CachedInfo().Config
		if cfg.MaxBytes <= 0 || cfg.MaxMsgSize <= 0 {
			t.Errorf("stream %s: max bytes %d, max message size %d: unbounded", name, cfg.MaxBytes, cfg.MaxMsgSize)
		}
	}
}

// A bucket created without a value size limit or a byte limit is used as it
// is, and the differences are logged.
func TestUnboundedBucketIsReported(t *testing.T) {
	srv := wt.StartNATS(t)
	js := wt.JetStream(t, wt.Connect(t, srv))
	ctx := context.Background()
	if _, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: worker.BucketCommands, History: 1}); err != nil {
		t.Fatal(err)
	}
	var logs wt.SyncBuffer
	sb := wt.StartSandbox(t, sandbox.Config{Rate: 1e6})
	wt.StartWorker(t, srv, wt.Client(t, sb), worker.WithLogger(zerolog.New(&logs)))
	wt.Eventually(t, 30*time.Second, func() bool {
		return strings.Contains(logs.String(), "max bytes unlimited") && strings.Contains(logs.String(), "max value size -1")
	}, "the unbounded bucket reported")
	kv, err := js.KeyValue(ctx, worker.BucketCommands)
	if err != nil {
		t.Fatal(err)
	}
	st, err := kv.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if cfg := st.Config(); cfg.MaxBytes > 0 || cfg.MaxValueSize > 0 {
		t.Fatalf("the operator's bucket was changed: %+v", cfg)
	}
}

// Events and parked streams created without a message limit (by an earlier
// version) are used as they are, and the differences are logged.
func TestStreamsWithoutMessageLimitAreReported(t *testing.T) {
	srv := wt.StartNATS(t)
	js := wt.JetStream(t, wt.Connect(t, srv))
	ctx := context.Background()
	for _, cfg := range []jetstream.StreamConfig{worker.StreamSettings{}.EventsStream(), worker.StreamSettings{}.ParkedStream()} {
		cfg.MaxMsgSize = -1
		if _, err := js.CreateStream(ctx, cfg); err != nil {
			t.Fatal(err)
		}
	}
	var logs wt.SyncBuffer
	sb := wt.StartSandbox(t, sandbox.Config{Rate: 1e6})
	wt.StartWorker(t, srv, wt.Client(t, sb), worker.WithLogger(zerolog.New(&logs)))
	for _, want := range []string{
		fmt.Sprintf("max message size -1 (expected %d", worker.EventsMaxMsgBytes),
		fmt.Sprintf("max message size -1 (expected %d", worker.ParkedMaxMsgBytes),
	} {
		wt.Eventually(t, 30*time.Second, func() bool { return strings.Contains(logs.String(), want) }, want)
	}
	s, err := js.Stream(ctx, worker.StreamEvents)
	if err != nil {
		t.Fatal(err)
	}
	if got := s.CachedInfo().Config.MaxMsgSize; got != -1 {
		t.Fatalf("the events stream was changed: max message size %d", got)
	}
}
