package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/xygroup/xygroup/worker"
	"github.com/xygroup/xygroup/worker/commands"
	wt "github.com/xygroup/xygroup/worker/workertest"
	"github.com/xygroup/xygroup/xylink/sandbox"
)

// runApp runs xygroup in this process and returns what it printed.
func runApp(ctx context.Context, args ...string) (string, string, error) {
	app := newApp()
	var out, errOut bytes.Buffer
	app.Writer, app.ErrWriter = &out, &errOut
	err := app.Run(ctx, append([]string{"xygroup"}, args...))
	return out.String(), errOut.String(), err
}

func TestPublishWaitOnTheREADMEExamples(t *testing.T) {
	srv := wt.StartNATS(t)
	sb := wt.StartSandbox(t, sandbox.Config{Rate: 1e6})
	wt.StartWorker(t, srv, wt.Client(t, sb))
	url := srv.ClientURL()
	out, errOut, err := runApp(context.Background(), "publish", "--wait", "--nats-url", url, "--timeout", "60s", "--enterprise-id", wt.Enterprise,
		"../../schemas/examples/command-manual.json", "../../schemas/examples/command-random.json", "../../schemas/examples/commands.ndjson")
	if err != nil {
		t.Fatalf("publish --wait: %v\n%s", err, errOut)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 5 {
		t.Fatalf("%d events printed, want 5:\n%s", len(lines), out)
	}
	for _, l := range lines {
		if !strings.Contains(l, `"groups":[{`) {
			t.Errorf("not a created event: %s", l)
		}
	}
	// The same commands again: the commands stream drops them as duplicates, and
	// --wait prints the same events, read from the workers' records.
	again, errOut, err := runApp(context.Background(), "publish", "--wait", "--nats-url", url, "--timeout", "60s", "--enterprise-id", wt.Enterprise,
		"../../schemas/examples/command-manual.json", "../../schemas/examples/command-random.json", "../../schemas/examples/commands.ndjson")
	if err != nil {
		t.Fatalf("publish --wait again: %v\n%s", err, errOut)
	}
	sorted := func(s string) []string { l := strings.Split(strings.TrimSpace(s), "\n"); slices.Sort(l); return l }
	if !slices.Equal(sorted(again), sorted(out)) {
		t.Errorf("published again, --wait printed\n%s\nthe first time\n%s", again, out)
	}

	// A file with an invalid command on line 3: refused with its line, nothing published.
	bad := filepath.Join(t.TempDir(), "bad.ndjson")
	_ = os.WriteFile(bad, []byte("{\"commandId\":\"ok-1\",\"meetingRoomNumber\":\"1\"}\n{\"commandId\":\"ok-2\",\"meetingRoomNumber\":\"2\"}\n{\"commandId\":\"bad\",\"meetingRoomNumber\":\"3\",\"mode\":\"manual\"}\n"), 0o600)
	js := wt.JetStream(t, wt.Connect(t, srv))
	before := streamMsgs(t, js, worker.StreamCommands)
	_, errOut, err = runApp(context.Background(), "publish", "--nats-url", url, bad)
	if err == nil || exitCode(err) != 1 || !strings.Contains(errOut, "bad.ndjson:3:") {
		t.Fatalf("invalid file: exit %v, stderr %q", err, errOut)
	}
	if after := streamMsgs(t, js, worker.StreamCommands); after != before {
		t.Fatalf("%d commands published from an invalid file", after-before)
	}
	// --wait exits non-zero when a command fails.
	if _, err := sb.AddMeeting(sandbox.MeetingSpec{Number: "m-small", MaxGroups: 1}); err != nil {
		t.Fatal(err)
	}
	many := filepath.Join(t.TempDir(), "many.json")
	_ = os.WriteFile(many, []byte(`{"commandId":"too-many","meetingRoomNumber":"m-small","groupCount":3}`), 0o600)
	out, _, err = runApp(context.Background(), "publish", "--wait", "--nats-url", url, many)
	if err == nil || exitCode(err) != 1 || !strings.Contains(out, "too_many_groups") {
		t.Fatalf("failed command: exit %v, out %q", err, out)
	}
}

func streamMsgs(t *testing.T, js jetstream.JetStream, name string) uint64 {
	t.Helper()
	s, err := js.Stream(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs
}

// Replay of 10,000 failed commands: each ends in exactly one new terminal event;
// a replay interrupted halfway and resumed sends nothing twice; a later replay
// skips them all as created.
func TestReplayTenThousandFailedCommands(t *testing.T) {
	const n = 10000
	srv := wt.StartNATS(t)
	sb := wt.StartSandbox(t, sandbox.Config{Rate: 1e7, Faults: sandbox.Faults{Fail: &sandbox.FixedAnswer{Status: 400, ErrorCode: 60001}}})
	c := wt.Client(t, sb)
	for range 2 {
		wt.StartWorker(t, srv, c, worker.WithConcurrency(64), worker.WithRate(1e7, nil))
	}
	nc := wt.Connect(t, srv)
	js := wt.JetStream(t, nc)
	wt.AwaitStream(t, js, worker.StreamCommands)
	for i := range n {
		id := fmt.Sprintf("rp-%05d", i)
		m := nats.NewMsg(worker.SubjectCreate)
		m.Data, m.Header = wt.Command(id, "m-"+id), nats.Header{nats.MsgIdHdr: []string{id}}
		if _, err := js.PublishMsgAsync(m); err != nil {
			t.Fatal(err)
		}
	}
	<-js.PublishAsyncComplete()
	wt.AwaitTerminal(t, js, n, 5*time.Minute)
	sb.SetFaults(sandbox.Faults{})
	url := srv.ClientURL()
	args := []string{"replay", "--nats-url", url, "--class", "rejected", "--no-progress", "--timeout", "5m"}

	// Dry run: what and how long.
	out, _, err := runApp(context.Background(), append(args, "--dry-run")...)
	if err != nil || !strings.Contains(out, fmt.Sprintf("would publish %d command(s)", n)) || !strings.Contains(out, "rejected") {
		t.Fatalf("dry run: %v\n%s", err, out)
	}
	// First run, interrupted once half the commands were handled.
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		id := (commands.Selection{Source: "failed", Classes: []string{"rejected"}}).ID()
		for ctx.Err() == nil {
			if cp, _ := commands.LoadCheckpoint(ctx, js, id); cp != nil && cp.Done >= n/2 {
				cancel()
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()
	_, errOut, err := runApp(ctx, args...)
	cancel()
	if err == nil || exitCode(err) != 130 {
		t.Fatalf("interrupted replay: exit %v\n%s", err, errOut)
	}
	createdAtInterrupt := sb.Stats().ByAnswer["200"]
	// Resumed: finishes, nothing twice.
	out, errOut, err = runApp(context.Background(), args...)
	if err != nil {
		t.Fatalf("resumed replay: %v\n%s", err, errOut)
	}
	var sum commands.Summary
	if err := json.Unmarshal([]byte(strings.TrimSpace(out)), &sum); err != nil {
		t.Fatalf("summary %q: %v", out, err)
	}
	t.Logf("interrupted after %d created; resumed: %+v", createdAtInterrupt, sum)
	if sum.Created != n || sum.Pending != 0 || sum.AlreadyReplayed == 0 || sum.Published+sum.AlreadyReplayed != n {
		t.Fatalf("resumed summary %+v", sum)
	}
	st := sb.Stats()
	if st.ByAnswer["200"] != n || len(st.DuplicateCreates) != 0 || st.ByAnswer["66684"] != 0 {
		t.Fatalf("sandbox: %v, duplicates %d", st.ByAnswer, len(st.DuplicateCreates))
	}
	if got := wt.TerminalCount(t, js); got != 2*n {
		t.Fatalf("%d terminal events, want %d (one failure and one replay outcome each)", got, 2*n)
	}
	// A second replay of the same failures: all created already, all skipped.
	out, _, err = runApp(context.Background(), append(args, "--id", "again")...)
	if err != nil || json.Unmarshal([]byte(strings.TrimSpace(out)), &sum) != nil || sum.SkippedDone != n || sum.Published != 0 {
		t.Fatalf("second replay: %v %+v", err, sum)
	}
}
