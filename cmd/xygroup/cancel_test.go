package main

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/xygroup/xygroup/worker"
	wt "github.com/xygroup/xygroup/worker/workertest"
	"github.com/xygroup/xygroup/xylink/sandbox"
)

// What to cancel is named once; anything else is a usage error (exit 2), and
// nothing is connected to.
func TestCancelUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		{"cancel"},
		{"cancel", "--command", "a", "--meeting", "1"},
		{"cancel", "--enterprise", "e"},
		{"cancel", "--command", "a", "extra"},
		{"cancel", "--bogus"},
	} {
		_, _, err := runApp(context.Background(), append(args, "--nats-url", "nats://127.0.0.1:1")...)
		if err == nil || exitCode(err) != 2 {
			t.Errorf("%v: %v (exit %d), want a usage error", args, err, exitCode(err))
		}
	}
}

// A parked command cancelled through the CLI ends cancelled, and --wait
// prints its failed.cancelled event.
func TestCancelThroughTheCLI(t *testing.T) {
	srv := wt.StartNATS(t)
	sb := wt.StartSandbox(t, sandbox.Config{Rate: 1e6})
	wt.StartWorker(t, srv, wt.Client(t, sb))
	js := wt.JetStream(t, wt.Connect(t, srv))
	wt.AwaitStream(t, js, worker.StreamCommands)
	if _, err := sb.AddMeeting(sandbox.MeetingSpec{Number: "m-cli", StartsIn: sandbox.Duration(3600e9)}); err != nil {
		t.Fatal(err)
	}
	wt.Publish(t, js, "cli-1", wt.Command("cli-1", "m-cli"))
	wt.AwaitConsumerIdle(t, js, 30e9)
	out, errOut, err := runApp(context.Background(), "cancel", "--command", "cli-1", "--reason", "moved", "--wait", "--nats-url", srv.ClientURL())
	if err != nil {
		t.Fatalf("%v\n%s", err, errOut)
	}
	var ev struct {
		Class, Reason, CommandID string
	}
	if err := json.Unmarshal([]byte(strings.TrimSpace(out)), &ev); err != nil || ev.Class != "cancelled" || ev.Reason != "moved" {
		t.Fatalf("printed %q (%v)", out, err)
	}
	t.Logf("%s", strings.TrimSpace(out))

	// status counts it.
	out, _, err = runApp(context.Background(), "status", "--json", "--nats-url", srv.ClientURL())
	var st Status
	if err != nil || json.Unmarshal([]byte(out), &st) != nil || st.Cancelled != 1 || st.CancelRejected != 0 {
		t.Fatalf("status after one cancel: %+v (%v)", st, err)
	}
	out, _, _ = runApp(context.Background(), "status", "--nats-url", srv.ClientURL())
	if !strings.Contains(out, "cancelled 1") {
		t.Fatalf("the status screen does not count the cancel:\n%s", out)
	}
}

// cancel --meeting --wait on a meeting with nothing to cancel says so when its
// --timeout ends (not that a command published later ends cancelled: by
// meeting, it does not), and Ctrl-C says the wait was interrupted.
func TestCancelWaitWithoutAnOutcomeSaysWhy(t *testing.T) {
	srv := wt.StartNATS(t)
	sb := wt.StartSandbox(t, sandbox.Config{Rate: 1e6})
	wt.StartWorker(t, srv, wt.Client(t, sb))
	wt.AwaitStream(t, wt.JetStream(t, wt.Connect(t, srv)), worker.StreamCommands)
	_, errOut, err := runApp(context.Background(), "cancel", "--meeting", "m-none", "--wait", "--timeout", "2s", "--nats-url", srv.ClientURL())
	if err == nil || exitCode(err) != 1 {
		t.Fatalf("cancel --meeting with nothing to cancel: %v, want exit 1\n%s", err, errOut)
	}
	if !strings.Contains(errOut, "waiting up to 2s (--timeout) for the first outcome, then 5s (--window) for more") {
		t.Errorf("cancel --wait does not say how long it waits:\n%s", errOut)
	}
	if msg := errorMessage(err); !strings.Contains(msg, "no outcome within 2s: meeting m-none had no command waiting to be sent") ||
		strings.Contains(msg, "ends cancelled when it is") {
		t.Errorf("cancel --meeting without an outcome: %s", msg)
	}

	// Ctrl-C once it waits.
	ctx, interrupt := context.WithCancel(context.Background())
	defer interrupt()
	app := newApp()
	var out bytes.Buffer
	app.Writer, app.ErrWriter = &out, writerFunc(func(p []byte) (int, error) {
		if bytes.Contains(p, []byte("waiting up to")) {
			interrupt()
		}
		return len(p), nil
	})
	err = app.Run(ctx, []string{"xygroup", "cancel", "--command", "not-yet-1", "--wait", "--nats-url", srv.ClientURL()})
	if msg := errorMessage(err); exitCode(err) != 1 || !strings.Contains(msg, ": interrupted before any outcome") {
		t.Errorf("cancel --wait interrupted: exit %d, %s", exitCode(err), msg)
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }
