package main

import (
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
