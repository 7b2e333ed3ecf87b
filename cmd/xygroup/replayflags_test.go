package main

import (
	"context"
	"strings"
	"testing"
	"time"

	wt "github.com/xygroup/xygroup/worker/workertest"
	"github.com/xygroup/xygroup/xylink/sandbox"
)

// replay's --wait is a switch, as on publish and cancel, and --timeout says
// how long; a dry run that selects nothing names the failures of the classes
// it left out; the summary names classes only when a command failed again.
func TestReplayFlagsAndMessages(t *testing.T) {
	srv := wt.StartNATS(t)
	sb := wt.StartSandbox(t, sandbox.Config{Rate: 1e6, Faults: sandbox.Faults{Fail: &sandbox.FixedAnswer{Status: 400, ErrorCode: 60001}}})
	wt.StartWorker(t, srv, wt.Client(t, sb))
	js := wt.JetStream(t, wt.Connect(t, srv))
	for _, id := range []string{"flags-1", "flags-2"} {
		wt.Publish(t, js, id, wt.Command(id, "m-"+id))
	}
	wt.AwaitTerminal(t, js, 2, time.Minute)
	url := srv.ClientURL()

	// The default classes select nothing: the dry run says what it left out.
	out, errOut, err := runApp(context.Background(), "replay", "--dry-run", "--nats-url", url)
	if err != nil {
		t.Fatalf("dry run: %v\n%s", err, errOut)
	}
	if !strings.Contains(out, "would publish 0 command(s)") ||
		!strings.Contains(out, "not selected: failures of other classes: rejected 2 (select them with --class rejected)") {
		t.Errorf("a dry run that selects nothing does not name the classes left out:\n%s", out)
	}

	// --wait=30m, from when --wait took the time: a usage error that says what to write.
	_, _, err = runApp(context.Background(), "replay", "--wait=30m", "--class", "rejected", "--nats-url", url)
	if err == nil || exitCode(err) != 2 || !strings.Contains(err.Error(), "--wait is a switch (wait or not): give how long with --timeout 30m") {
		t.Errorf("replay --wait=30m: %v (exit %d)", err, exitCode(err))
	}

	// --wait then another flag, as publish and cancel take it.
	sb.SetFaults(sandbox.Faults{})
	out, errOut, err = runApp(context.Background(), "replay", "--wait", "--class", "rejected", "--timeout", "2m", "--no-progress", "--nats-url", url)
	if err != nil {
		t.Fatalf("replay --wait --class rejected: exit %d: %v\n%s", exitCode(err), err, errOut)
	}
	if sum := summaryOf(t, out); sum.Created != 2 {
		t.Errorf("summary %+v, want 2 created", sum)
	}
	if !strings.Contains(errOut, "outcomes: created 2, failed again 0, pending 0") || strings.Contains(errOut, "map[") {
		t.Errorf("summary line:\n%s", errOut)
	}
}

// "--wait 2m", the old form, still works, with a warning that names the new one.
func TestReplayOldWaitDurationIsDeprecated(t *testing.T) {
	srv := wt.StartNATS(t)
	sb := wt.StartSandbox(t, sandbox.Config{Rate: 1e6, Faults: sandbox.Faults{Fail: &sandbox.FixedAnswer{Status: 400, ErrorCode: 60001}}})
	wt.StartWorker(t, srv, wt.Client(t, sb))
	js := wt.JetStream(t, wt.Connect(t, srv))
	wt.Publish(t, js, "old-1", wt.Command("old-1", "m-old-1"))
	wt.AwaitTerminal(t, js, 1, time.Minute)
	_, errOut, err := runApp(context.Background(), "replay", "--class", "rejected", "--no-progress", "--nats-url", srv.ClientURL(), "--wait", "2m")
	if err == nil || exitCode(err) != 1 || !strings.Contains(err.Error(), "1 command failed again (rejected 1)") {
		t.Fatalf("replay --wait 2m: %v (exit %d)\n%s", err, exitCode(err), errOut)
	}
	if !strings.Contains(errOut, "--wait 2m is deprecated: use --wait --timeout 2m") ||
		!strings.Contains(errOut, "failed again 1 (rejected 1), pending 0") {
		t.Errorf("replay --wait 2m: stderr\n%s", errOut)
	}
}

// A replay run again once finished publishes nothing: it says so, and how to
// replay the same selection again.
func TestReplayFinishedSaysHowToReplayAgain(t *testing.T) {
	srv := wt.StartNATS(t)
	sb := wt.StartSandbox(t, sandbox.Config{Rate: 1e6, Faults: sandbox.Faults{Fail: &sandbox.FixedAnswer{Status: 400, ErrorCode: 60001}}})
	wt.StartWorker(t, srv, wt.Client(t, sb))
	js := wt.JetStream(t, wt.Connect(t, srv))
	wt.Publish(t, js, "again-1", wt.Command("again-1", "m-again-1"))
	wt.AwaitTerminal(t, js, 1, time.Minute)
	url := srv.ClientURL()
	if _, errOut, err := runApp(context.Background(), "replay", "--class", "rejected", "--timeout", "2m", "--nats-url", url); exitCode(err) != 1 {
		t.Fatalf("replay of a command that fails again: %v, want exit 1\n%s", err, errOut)
	}
	const note = "1 of 1 handled before; it is finished: --id NAME starts another replay of this selection"
	out, errOut, err := runApp(context.Background(), "replay", "--dry-run", "--class", "rejected", "--nats-url", url)
	if err != nil || !strings.Contains(out, "would publish 0 command(s) for 1 meeting(s) (resuming: "+note+")") {
		t.Errorf("dry run of a finished replay (%v):\n%s%s", err, out, errOut)
	}
	_, errOut, _ = runApp(context.Background(), "replay", "--class", "rejected", "--timeout", "2m", "--nats-url", url)
	if !strings.Contains(errOut, ": "+note+"\n") {
		t.Errorf("a finished replay run again:\n%s", errOut)
	}
}
