package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/xygroup/xygroup/worker"
	"github.com/xygroup/xygroup/worker/commands"
	wt "github.com/xygroup/xygroup/worker/workertest"
	"github.com/xygroup/xygroup/xylink/sandbox"
)

// A small commands stream (64 KiB) while no worker runs: publishing goes on
// until the stream refuses, and `xygroup publish` then exits 1 naming the full
// stream; a command larger than a message may be is refused too. Every command
// the stream accepted ends in exactly one event once a worker starts. Then the
// stream, full of done commands, takes new commands again: the worker trims its
// acknowledged history.
func TestFullCommandsStreamRefusesAndIsTrimmed(t *testing.T) {
	srv := wt.StartNATS(t)
	js := wt.JetStream(t, wt.Connect(t, srv))
	ctx := context.Background()
	settings := worker.StreamSettings{CommandsMaxBytes: 64 << 10, HistoryTrimLag: time.Second}
	if _, err := worker.Setup(ctx, js, settings, zerolog.Nop()); err != nil { // the streams as a worker creates them
		t.Fatal(err)
	}

	big := wt.Command("too-big", "m-too-big", "groupName", fmt.Sprintf("%q", strings.Repeat("x", worker.CommandsMaxMsgBytes)))
	if _, err := commands.Publish(ctx, js, big, nil); err == nil || !strings.Contains(err.Error(), "larger than a message of the commands stream") {
		t.Fatalf("a command over the message limit: %v", err)
	}

	const n = 400
	var file bytes.Buffer
	for i := range n {
		id := fmt.Sprintf("full-%03d", i)
		file.Write(wt.Command(id, "m-"+id))
		file.WriteByte('\n')
	}
	path := filepath.Join(t.TempDir(), "many.ndjson")
	if err := os.WriteFile(path, file.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	_, errOut, err := runApp(ctx, "publish", "--nats-url", srv.ClientURL(), "--no-progress", path)
	if exitCode(err) != 1 || !strings.Contains(err.Error(), "the commands stream "+worker.StreamCommands+" is full") {
		t.Fatalf("publish into a full stream: exit %d (%v), stderr %q", exitCode(err), err, errOut)
	}
	accepted := int(streamMsgs(t, js, worker.StreamCommands))
	if accepted == 0 || accepted >= n {
		t.Fatalf("%d of %d commands accepted by a 64 KiB stream", accepted, n)
	}
	t.Logf("%d of %d commands accepted; refused with: %v", accepted, n, err)

	sb := wt.StartSandbox(t, sandbox.Config{Rate: 1e6})
	wt.StartWorker(t, srv, wt.Client(t, sb), worker.WithStreams(settings), worker.WithConcurrency(64))
	evs := wt.AwaitTerminal(t, js, accepted, 3*time.Minute)
	for i := range n {
		id := fmt.Sprintf("full-%03d", i)
		switch e := evs[id]; {
		case i < accepted && (len(e) != 1 || e[0].Subject != worker.SubjectCreated):
			t.Errorf("%s (accepted): events %v", id, e)
		case i >= accepted && len(e) != 0:
			t.Errorf("%s (refused): events %v", id, e)
		}
	}
	if len(evs) != accepted {
		t.Errorf("events of %d commands, want %d", len(evs), accepted)
	}

	// Full of done commands: taken again once the workers trimmed the history.
	wt.Eventually(t, time.Minute, func() bool {
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		_, err := commands.Publish(pctx, js, wt.Command("after-trim", "m-after-trim"), nil)
		return err == nil
	}, "a command accepted by the trimmed stream")
	if e := wt.AwaitTerminal(t, js, accepted+1, time.Minute)["after-trim"]; len(e) != 1 || e[0].Subject != worker.SubjectCreated {
		t.Fatalf("after the trim: events %v", e)
	}
	s, err := js.Stream(ctx, worker.StreamCommands)
	if err != nil {
		t.Fatal(err)
	}
	if first := s.CachedInfo().State.FirstSeq; first <= 1 {
		t.Fatalf("the history was not trimmed: first sequence %d", first)
	}
}
