package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/xygroup/xygroup/worker/contract"
	"github.com/xygroup/xygroup/worker/embedded"
	wt "github.com/xygroup/xygroup/worker/workertest"
	"github.com/xygroup/xygroup/xylink/sandbox"
)

// The quickstart run twice: the second publish --wait, given no
// --enterprise-id, finds the outcome of the command the stream dropped as a
// duplicate under the tenant the running workers name, prints it and exits 0.
func TestPublishWaitAgainPrintsTheRecordedOutcome(t *testing.T) {
	t.Setenv("XYLINK_ENTERPRISE_ID", "")
	srv := wt.StartNATS(t)
	sb := wt.StartSandbox(t, sandbox.Config{Rate: 1e6})
	wt.StartWorker(t, srv, wt.Client(t, sb))
	file := filepath.Join(t.TempDir(), "command.json")
	if err := os.WriteFile(file, wt.Command("twice-1", "910004217404"), 0o600); err != nil {
		t.Fatal(err)
	}
	args := []string{"publish", "--wait", "--nats-url", srv.ClientURL(), "--timeout", "60s", file}
	first, errOut, err := runApp(context.Background(), args...)
	if err != nil || !strings.Contains(first, `"groups":[{`) {
		t.Fatalf("first publish --wait: %v\n%s%s", err, first, errOut)
	}
	again, errOut, err := runApp(context.Background(), args...)
	if err != nil {
		t.Fatalf("publish --wait again: exit %d: %v\n%s", exitCode(err), err, errOut)
	}
	if again != first {
		t.Errorf("published again, --wait printed\n%s\nthe first time\n%s", again, first)
	}
	if !strings.Contains(errOut, "1 of them the commands stream held already (published before)") {
		t.Errorf("publish --wait again does not say the command was published before:\n%s", errOut)
	}
}

// publish --wait on a command parked until its notBefore says so while it
// waits, and its timeout names the command and what it waits for.
func TestPublishWaitSaysWhatAParkedCommandWaitsFor(t *testing.T) {
	srv := wt.StartNATS(t)
	sb := wt.StartSandbox(t, sandbox.Config{Rate: 1e6})
	wt.StartWorker(t, srv, wt.Client(t, sb))
	notBefore := time.Now().Add(30 * time.Minute).UTC().Truncate(time.Second).Format(time.RFC3339)
	file := filepath.Join(t.TempDir(), "command.json")
	if err := os.WriteFile(file, wt.Command("later-1", "910004217404", "notBefore", `"`+notBefore+`"`), 0o600); err != nil {
		t.Fatal(err)
	}
	_, errOut, err := runApp(context.Background(), "publish", "--wait", "--nats-url", srv.ClientURL(), "--timeout", "15s", file)
	if err == nil || exitCode(err) != 1 {
		t.Fatalf("publish --wait on a parked command: %v, want exit 1\n%s", err, errOut)
	}
	parked := "later-1: parked until its notBefore " + notBefore
	if !strings.Contains(errOut, parked) {
		t.Errorf("publish --wait did not say what it waits for (want %q):\n%s", parked, errOut)
	}
	msg := err.Error()
	if strings.Contains(msg, "context deadline exceeded") || !strings.Contains(msg, "gave up waiting after 15s") ||
		!strings.Contains(msg, "1 of 1 command(s) have no terminal event yet") || !strings.Contains(msg, parked) {
		t.Errorf("the timeout does not say what was still pending:\n%s", msg)
	}
	// Published again, the command's notBefore says what it waits for.
	_, errOut, err = runApp(context.Background(), "publish", "--wait", "--nats-url", srv.ClientURL(), "--timeout", "2s", file)
	again := "later-1: published before and not ended yet: its notBefore is " + notBefore + " (0 call(s) so far)"
	if exitCode(err) != 1 || !strings.Contains(errOut, again) || !strings.Contains(errorMessage(err), again) {
		t.Errorf("publish --wait again on a parked command: exit %d, want 1 and %q\n%s%s", exitCode(err), again, errOut, errorMessage(err))
	}
}

// With no running worker to name the default tenant, publish --wait on a
// command published before says at once what to give, and its timeout says
// it again; given, the outcome is printed.
func TestPublishWaitAgainWithoutTheWorkersTenantSaysWhatToGive(t *testing.T) {
	t.Setenv("XYLINK_ENTERPRISE_ID", "")
	srv := wt.StartNATS(t)
	sb := wt.StartSandbox(t, sandbox.Config{Rate: 1e6})
	w := wt.StartWorker(t, srv, wt.Client(t, sb))
	file := filepath.Join(t.TempDir(), "command.json")
	if err := os.WriteFile(file, wt.Command("notenant-1", "910004217404"), 0o600); err != nil {
		t.Fatal(err)
	}
	url := srv.ClientURL()
	first, errOut, err := runApp(context.Background(), "publish", "--wait", "--nats-url", url, "--timeout", "60s", file)
	if err != nil {
		t.Fatalf("first publish --wait: %v\n%s", err, errOut)
	}
	if err := w.Stop(); err != nil {
		t.Fatal(err)
	}
	// The stopped worker's heartbeat would expire in 15 s: gone at once.
	js := wt.JetStream(t, wt.Connect(t, srv))
	kv, err := js.KeyValue(context.Background(), contract.BucketReplicas)
	if err != nil {
		t.Fatal(err)
	}
	keys, _ := kv.ListKeys(context.Background())
	for k := range keys.Keys() {
		_ = kv.Purge(context.Background(), k)
	}

	_, errOut, err = runApp(context.Background(), "publish", "--wait", "--nats-url", url, "--timeout", "3s", file)
	if err == nil || exitCode(err) != 1 {
		t.Fatalf("publish --wait again without a tenant: %v, want exit 1\n%s", err, errOut)
	}
	if !strings.Contains(errOut, "notenant-1: published before; it names no enterpriseId") ||
		!strings.Contains(errOut, "no running worker names its default tenant") || !strings.Contains(errOut, "give it with --enterprise-id") {
		t.Errorf("publish --wait does not say at once what to give:\n%s", errOut)
	}
	if msg := err.Error(); !strings.Contains(msg, "gave up waiting after 3s") || !strings.Contains(msg, "give it with --enterprise-id or XYLINK_ENTERPRISE_ID") {
		t.Errorf("the timeout does not say what to give:\n%s", msg)
	}
	again, errOut, err := runApp(context.Background(), "publish", "--wait", "--nats-url", url, "--timeout", "60s", "--enterprise-id", wt.Enterprise, file)
	if err != nil || again != first {
		t.Fatalf("with --enterprise-id: %v\n%s\nwant\n%s\n%s", err, again, first, errOut)
	}
}

// Ctrl-C during publish --wait says that the wait was interrupted and which
// commands it leaves, not "context deadline exceeded"; with a worker running,
// it does not say that none runs.
func TestPublishWaitInterruptedSaysWhatIsLeft(t *testing.T) {
	srv := wt.StartNATS(t)
	sb := wt.StartSandbox(t, sandbox.Config{Rate: 1e6})
	wt.StartWorker(t, srv, wt.Client(t, sb))
	notBefore := time.Now().Add(30 * time.Minute).UTC().Truncate(time.Second).Format(time.RFC3339)
	file := filepath.Join(t.TempDir(), "command.json")
	if err := os.WriteFile(file, wt.Command("later-2", "910004217404", "notBefore", `"`+notBefore+`"`), 0o600); err != nil {
		t.Fatal(err)
	}
	awaitHeartbeat(t, srv)
	ctx, interrupt := context.WithCancel(context.Background())
	defer interrupt()
	// Ctrl-C once the worker has parked the command.
	sub, err := wt.Connect(t, srv).Subscribe(contract.SubjectWaiting, func(*nats.Msg) { interrupt() })
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	_, errOut, err := runApp(ctx, "publish", "--wait", "--nats-url", srv.ClientURL(), "--timeout", "10m", file)
	if err == nil || exitCode(err) != 1 {
		t.Fatalf("publish --wait interrupted: %v, want exit 1\n%s", err, errOut)
	}
	msg := errorMessage(err)
	if strings.Contains(msg, "context deadline exceeded") || !strings.HasPrefix(msg, "interrupted: 1 of 1 command(s) have no terminal event yet") ||
		!strings.Contains(msg, "\n  later-2: ") {
		t.Errorf("an interrupted wait does not say so, and what it leaves:\n%s", msg)
	}
	if strings.Contains(errOut+msg, "no worker is running") {
		t.Errorf("with a worker running, publish --wait says none runs:\n%s%s", errOut, msg)
	}
}

// publish --wait with no worker running says so while it waits (after a
// heartbeat's interval: a worker just started may not have written its first),
// and again when it gives up: nothing ends the wait until a worker starts.
func TestPublishWaitWithoutAWorkerSaysSo(t *testing.T) {
	srv := wt.StartNATS(t)
	sb := wt.StartSandbox(t, sandbox.Config{Rate: 1e6})
	w := wt.StartWorker(t, srv, wt.Client(t, sb)) // creates the streams and the heartbeats bucket
	awaitHeartbeat(t, srv)
	if err := w.Stop(); err != nil {
		t.Fatal(err)
	}
	// The stopped worker's heartbeat would expire in 15 s: gone at once.
	js := wt.JetStream(t, wt.Connect(t, srv))
	kv, err := js.KeyValue(context.Background(), contract.BucketReplicas)
	if err != nil {
		t.Fatal(err)
	}
	keys, _ := kv.ListKeys(context.Background())
	for k := range keys.Keys() {
		_ = kv.Purge(context.Background(), k)
	}
	file := filepath.Join(t.TempDir(), "command.json")
	if err := os.WriteFile(file, wt.Command("noworker-1", "910004217404", "enterpriseId", `"`+wt.Enterprise+`"`), 0o600); err != nil {
		t.Fatal(err)
	}
	_, errOut, err := runApp(context.Background(), "publish", "--wait", "--nats-url", srv.ClientURL(), "--timeout", "10s", file)
	if err == nil || exitCode(err) != 1 {
		t.Fatalf("publish --wait without a worker: %v, want exit 1\n%s", err, errOut)
	}
	const note = "no worker is running (none has a heartbeat in xygroup-replicas): the commands wait in the commands stream until one starts (xygroup worker)"
	if !strings.Contains(errOut, note) {
		t.Errorf("publish --wait does not say while it waits that no worker runs:\n%s", errOut)
	}
	if msg := errorMessage(err); !strings.HasPrefix(msg, "gave up waiting after 10s") || !strings.Contains(msg, "noworker-1: no outcome yet") || !strings.Contains(msg, note) {
		t.Errorf("the timeout does not say that no worker runs:\n%s", msg)
	}
}

// awaitHeartbeat returns once a worker's heartbeat is stored.
func awaitHeartbeat(t *testing.T, srv *embedded.Server) {
	t.Helper()
	js := wt.JetStream(t, wt.Connect(t, srv))
	wt.Eventually(t, 30*time.Second, func() bool {
		kv, err := js.KeyValue(context.Background(), contract.BucketReplicas)
		if err != nil {
			return false
		}
		keys, err := kv.ListKeys(context.Background())
		if err != nil {
			return false
		}
		for range keys.Keys() {
			return true
		}
		return false
	}, "a worker's heartbeat")
}
