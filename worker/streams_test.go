package worker_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/xygroup/xygroup/worker"
	wt "github.com/xygroup/xygroup/worker/workertest"
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
