package worker_test

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/xygroup/xygroup/worker"
	"github.com/xygroup/xygroup/worker/jsconfig"
	wt "github.com/xygroup/xygroup/worker/workertest"
	"github.com/xygroup/xygroup/xylink/sandbox"
)

// Streams an operator configured differently are used as they are, and the
// differences are logged; missing ones are created.
func TestExistingStreamsAreReportedNotOverwritten(t *testing.T) {
	srv := wt.StartNATS(t)
	js := wt.JetStream(t, wt.Connect(t, srv))
	ctx := context.Background()
	mine := worker.StreamSettings{}.EventsStream()
	mine.MaxAge = 24 * time.Hour
	mine.Duplicates = time.Minute
	if _, err := js.CreateStream(ctx, mine); err != nil {
		t.Fatal(err)
	}
	var logs wt.SyncBuffer
	if _, err := worker.Setup(ctx, js, worker.StreamSettings{}, zerolog.New(&logs)); err != nil {
		t.Fatal(err)
	}
	s, err := js.Stream(ctx, worker.StreamEvents)
	if err != nil {
		t.Fatal(err)
	}
	if got := s.CachedInfo().Config; got.MaxAge != 24*time.Hour || got.Duplicates != time.Minute {
		t.Fatalf("the operator's stream was changed: max age %v, dedupe %v", got.MaxAge, got.Duplicates)
	}
	out := logs.String()
	if !strings.Contains(out, "max age 24h0m0s (expected 168h0m0s)") || !strings.Contains(out, "dedupe window 1m0s") {
		t.Fatalf("differences not reported:\n%s", out)
	}
	if _, err := js.Stream(ctx, worker.StreamCommands); err != nil {
		t.Fatalf("the missing commands stream was not created: %v", err)
	}
	// A stream without a subject the worker needs stops it with a clear error.
	broken := worker.StreamSettings{}.CommandsStream()
	broken.Name, broken.Subjects = "OTHER", []string{"other.>"}
	_ = js.DeleteStream(ctx, worker.StreamCommands)
	broken.Name = worker.StreamCommands
	if _, err := js.CreateStream(ctx, broken); err != nil {
		t.Fatal(err)
	}
	if _, err := worker.Setup(ctx, js, worker.StreamSettings{}, zerolog.Nop()); err == nil || !strings.Contains(err.Error(), "does not carry subject xylink.groups.create") {
		t.Fatalf("a stream without the command subject was accepted: %v", err)
	}
}

// A commands stream and shared consumer created by an earlier version, with
// only xylink.groups.create, are upgraded at start to carry and take
// xylink.groups.replay and xylink.groups.cancel too; what they held is kept.
func TestOldCommandsStreamAndConsumerAreUpgraded(t *testing.T) {
	srv := wt.StartNATS(t)
	js := wt.JetStream(t, wt.Connect(t, srv))
	ctx := context.Background()
	old := worker.StreamSettings{}.CommandsStream()
	old.Subjects = []string{worker.SubjectCreate}
	if _, err := js.CreateStream(ctx, old); err != nil {
		t.Fatal(err)
	}
	oldCons := worker.StreamSettings{}.WorkersConsumer()
	oldCons.FilterSubjects, oldCons.FilterSubject = nil, worker.SubjectCreate
	if _, err := js.CreateConsumer(ctx, worker.StreamCommands, oldCons); err != nil {
		t.Fatal(err)
	}
	wt.Publish(t, js, "queued-1", wt.Command("queued-1", "m-queued")) // waiting for the worker

	sb := wt.StartSandbox(t, sandbox.Config{Rate: 1e6})
	var logs wt.SyncBuffer
	wt.StartWorker(t, srv, wt.Client(t, sb), worker.WithLogger(zerolog.New(&logs)))
	wt.AwaitTerminal(t, js, 1, time.Minute)
	s, err := js.Stream(ctx, worker.StreamCommands)
	if err != nil {
		t.Fatal(err)
	}
	if got := s.CachedInfo().Config.Subjects; !slices.Equal(got, []string{worker.SubjectCreate, worker.SubjectReplay, worker.SubjectCancel}) {
		t.Fatalf("stream subjects %v", got)
	}
	c, err := js.Consumer(ctx, worker.StreamCommands, worker.ConsumerWorkers)
	if err != nil {
		t.Fatal(err)
	}
	if got := c.CachedInfo().Config; got.FilterSubject != "" || !slices.Equal(got.FilterSubjects, []string{worker.SubjectCreate, worker.SubjectReplay, worker.SubjectCancel}) {
		t.Fatalf("consumer filters %q %v", got.FilterSubject, got.FilterSubjects)
	}
	out := logs.String()
	if !strings.Contains(out, `"level":"info","stream":"XYLINK_GROUP_COMMANDS","added":["xylink.groups.replay","xylink.groups.cancel"]`) ||
		!strings.Contains(out, `"level":"info","consumer":"xygroup-workers","added":["xylink.groups.replay","xylink.groups.cancel"]`) {
		t.Fatalf("the upgrade is not logged:\n%s", out)
	}
	// Replays now reach the workers.
	wt.PublishOn(t, js, worker.SubjectReplay, "replayed-1", wt.Command("replayed-1", "m-replayed"), worker.HeaderReplay, "r-up")
	if evs := wt.AwaitTerminal(t, js, 2, time.Minute)["replayed-1"]; len(evs) != 1 || evs[0].Subject != worker.SubjectCreated {
		t.Fatalf("replay: %v", evs)
	}
}

// A commands stream that cannot take xylink.groups.replay (another stream has
// it) stops the worker with an error that says what to do.
func TestCommandsStreamThatCannotTakeTheReplaySubject(t *testing.T) {
	srv := wt.StartNATS(t)
	js := wt.JetStream(t, wt.Connect(t, srv))
	ctx := context.Background()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "OTHER", Subjects: []string{worker.SubjectReplay}}); err != nil {
		t.Fatal(err)
	}
	old := worker.StreamSettings{}.CommandsStream()
	old.Subjects = []string{worker.SubjectCreate}
	if _, err := js.CreateStream(ctx, old); err != nil {
		t.Fatal(err)
	}
	_, err := worker.Setup(ctx, js, worker.StreamSettings{}, zerolog.Nop())
	if !jsconfig.IsMisconfigured(err) || !strings.Contains(err.Error(), "nats stream edit XYLINK_GROUP_COMMANDS --subjects xylink.groups.create,xylink.groups.replay") {
		t.Fatalf("want a misconfiguration naming the fix, got %v", err)
	}
	t.Log(err)
}

// A commands stream created as earlier versions did (dropping its oldest
// commands when full, with no per-message limit) is used as it is, and both
// differences are reported with what they cost and how to change them.
func TestCommandsStreamThatDropsIsReported(t *testing.T) {
	srv := wt.StartNATS(t)
	js := wt.JetStream(t, wt.Connect(t, srv))
	ctx := context.Background()
	old := worker.StreamSettings{}.CommandsStream()
	old.Discard, old.MaxMsgSize = jetstream.DiscardOld, 0
	if _, err := js.CreateStream(ctx, old); err != nil {
		t.Fatal(err)
	}
	var logs wt.SyncBuffer
	if _, err := worker.Setup(ctx, js, worker.StreamSettings{}, zerolog.New(&logs)); err != nil {
		t.Fatal(err)
	}
	s, err := js.Stream(ctx, worker.StreamCommands)
	if err != nil {
		t.Fatal(err)
	}
	if got := s.CachedInfo().Config; got.Discard != jetstream.DiscardOld || got.MaxMsgSize > 0 {
		t.Fatalf("the operator's stream was changed: discard %v, max message size %d", got.Discard, got.MaxMsgSize)
	}
	out := logs.String()
	for _, want := range []string{"discard old (expected new", "--discard new", "max message size -1 (expected 270336", "--max-msg-size 270336"} {
		if !strings.Contains(out, want) {
			t.Errorf("%q not reported:\n%s", want, out)
		}
	}
}
