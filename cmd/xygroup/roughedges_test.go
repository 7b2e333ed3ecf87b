package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/xygroup/xygroup/worker"
	wt "github.com/xygroup/xygroup/worker/workertest"
	"github.com/xygroup/xygroup/xylink/sandbox"
)

// A flag value that does not parse is a usage error naming the flag and what
// it takes, not the parser's function.
func TestFlagValueErrorsSayWhatTheyTake(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"worker", "--rate", "abc"}, `invalid value "abc" for --rate: want a number, such as 20 or 0.5; run 'xygroup worker --help' for usage`},
		{[]string{"worker", "--concurrency", "x"}, `invalid value "x" for --concurrency: want a whole number, such as 32;`},
		{[]string{"worker", "--max-wait", "5x"}, `invalid value "5x" for --max-wait: want a duration, such as 500ms, 30s, 5m or 1h;`},
		{[]string{"worker", "--sandbox=maybe"}, `invalid value "maybe" for --sandbox: want true or false;`},
		{[]string{"health", "--timeout", "3"}, `invalid value "3" for --timeout: want a duration`},
		{[]string{"worker", "--log-format", "text"}, `invalid value "text" for --log-format: want json or console;`},
		{[]string{"worker", "--log-level", "verbose"}, `invalid value "verbose" for --log-level: want debug, info, warn or error;`},
	} {
		_, _, err := runApp(context.Background(), c.args...)
		if err == nil || exitCode(err) != 2 || !strings.Contains(errorMessage(err), c.want) || strings.Contains(err.Error(), "strconv") {
			t.Errorf("%v: exit %d, %q; want exit 2 and %q", c.args, exitCode(err), errorMessage(err), c.want)
		}
	}
	out, _, err := runApp(context.Background(), "health", "--help")
	if err != nil || !strings.Contains(out, "--timeout duration  how long to wait for the answer") {
		t.Errorf("health --help (%v) does not say what --timeout is:\n%s", err, out)
	}
}

// An input file that cannot be read or holds an invalid command is a failure
// (exit 1), not a usage error; nothing is connected to.
func TestPublishBadInputExitsOne(t *testing.T) {
	bad := filepath.Join(t.TempDir(), "bad.ndjson")
	_ = os.WriteFile(bad, []byte("{\"commandId\":\"ok-1\",\"meetingRoomNumber\":\"1\"}\n{\"commandId\":\"bad\",\"meetingRoomNumber\":\"3\",\"mode\":\"manual\"}\n"), 0o600)
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{bad}, "1 invalid command(s); nothing published"},
		{[]string{filepath.Join(t.TempDir(), "missing.json")}, "no such file"},
		{[]string{os.DevNull}, "no commands to publish"},
	} {
		_, errOut, err := runApp(context.Background(), append([]string{"publish", "--nats-url", "nats://127.0.0.1:1"}, c.args...)...)
		if err == nil || exitCode(err) != 1 || !strings.Contains(err.Error(), c.want) {
			t.Errorf("publish %v: exit %d, %v (%s); want exit 1 and %q", c.args, exitCode(err), err, errOut, c.want)
		}
	}
}

// A command scheduled two days ahead waits with a waiting event that the table
// shows with dates (next attempt at its notBefore, giving up its maximum wait
// later); one scheduled in 2030 is refused at once as invalid_command. Its
// cancel reads once in the table, and a cancel that comes too late is listed
// by events --type cancel_rejected.
func TestEventsTableOfAScheduledCommand(t *testing.T) {
	srv := wt.StartNATS(t)
	sb := wt.StartSandbox(t, sandbox.Config{Rate: 1e6})
	wt.StartWorker(t, srv, wt.Client(t, sb), worker.WithMaxWait(3*time.Hour))
	js := wt.JetStream(t, wt.Connect(t, srv))
	wt.AwaitStream(t, js, worker.StreamCommands)
	url := srv.ClientURL()
	dir := t.TempDir()
	file := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}

	far := file("far.json", `{"commandId":"far-1","meetingRoomNumber":"910000000001","groupCount":2,"notBefore":"2030-01-01T09:00:00Z"}`)
	out, _, err := runApp(context.Background(), "publish", "--wait", "--timeout", "60s", "--nats-url", url, far)
	if err == nil || exitCode(err) != 1 || !strings.Contains(out, `"class":"invalid_command"`) ||
		!strings.Contains(out, "notBefore is too far ahead: at most 72h0m0s after the command arrives") ||
		!strings.Contains(out, "notBefore 2030-01-01T09:00:00Z is after") {
		t.Fatalf("notBefore in 2030: exit %d (%v), printed %s", exitCode(err), err, out)
	}

	notBefore := time.Now().Add(48 * time.Hour).Truncate(time.Second).UTC()
	ahead := file("ahead.json", fmt.Sprintf(`{"commandId":"ahead-1","meetingRoomNumber":"910000000002","groupCount":2,"notBefore":%q}`, notBefore.Format(time.RFC3339)))
	if _, errOut, err := runApp(context.Background(), "publish", "--nats-url", url, ahead); err != nil {
		t.Fatalf("publish: %v\n%s", err, errOut)
	}
	want := fmt.Sprintf("next attempt %s, gives up at %s", notBefore.Local().Format("2006-01-02 15:04:05"),
		notBefore.Add(3*time.Hour).Local().Format("2006-01-02 15:04:05"))
	for deadline := time.Now().Add(30 * time.Second); ; {
		out, _, err = runApp(context.Background(), "events", "--type", "waiting", "--format", "table", "--nats-url", url)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(out, "ahead-1") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no waiting event for ahead-1:\n%s", out)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !strings.Contains(out, want) {
		t.Fatalf("the waiting row does not read %q:\n%s", want, out)
	}

	if _, errOut, err := runApp(context.Background(), "cancel", "--command", "ahead-1", "--reason", "moved", "--wait", "--nats-url", url); err != nil {
		t.Fatalf("cancel: %v\n%s", err, errOut)
	}
	out, _, err = runApp(context.Background(), "events", "--type", "failed", "--class", "cancelled", "--format", "table", "--nats-url", url)
	if err != nil || !strings.Contains(out, "cancelled before any request for it could take effect: moved") || strings.Contains(out, "cancelled: cancelled") {
		t.Fatalf("the cancelled row (%v):\n%s", err, out)
	}

	// Too late: a command created (its record may still show the request
	// in flight when the created event is read: rejected as in_flight then).
	now := file("now.json", `{"commandId":"now-1","meetingRoomNumber":"910000000003","groupCount":2}`)
	if _, errOut, err := runApp(context.Background(), "publish", "--wait", "--timeout", "60s", "--nats-url", url, now); err != nil {
		t.Fatalf("publish --wait: %v\n%s", err, errOut)
	}
	_, _, err = runApp(context.Background(), "cancel", "--command", "now-1", "--wait", "--nats-url", url)
	if err == nil || exitCode(err) != 1 || !strings.Contains(err.Error(), "1 of 1 command(s) not cancelled") {
		t.Fatalf("a cancel of a created command: %v", err)
	}
	out, errOut, err := runApp(context.Background(), "events", "--type", "cancel_rejected", "--nats-url", url)
	if err != nil || strings.Count(out, `"reason":`) != 1 || !strings.Contains(out, `"commandId":"now-1"`) {
		t.Fatalf("events --type cancel_rejected: %v %s\n%s", err, errOut, out)
	}
	out, _, err = runApp(context.Background(), "events", "--type", "cancel_rejected", "--format", "table", "--nats-url", url)
	if err != nil || !regexp.MustCompile(`cancel_rejected +now-1 .* (done|in_flight): `).MatchString(out) {
		t.Fatalf("events --type cancel_rejected --format table: %v\n%s", err, out)
	}
}

// A progress bar is drawn on a terminal only: in a log or a pipe its redraws
// would stay as text, in front of the summary.
func TestNoProgressBarOffATerminal(t *testing.T) {
	srv := wt.StartNATS(t)
	sb := wt.StartSandbox(t, sandbox.Config{Rate: 1e6})
	wt.StartWorker(t, srv, wt.Client(t, sb))
	var file strings.Builder
	for i := range 100 {
		file.Write(wt.Command(fmt.Sprintf("bar-%03d", i), fmt.Sprintf("m-bar-%03d", i)))
		file.WriteByte('\n')
	}
	path := filepath.Join(t.TempDir(), "many.ndjson")
	if err := os.WriteFile(path, []byte(file.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	_, errOut, err := runApp(context.Background(), "publish", "--nats-url", srv.ClientURL(), path)
	if err != nil {
		t.Fatalf("publish: %v\n%s", err, errOut)
	}
	if errOut != "published 100 command(s)\n" {
		t.Errorf("publish of 100 commands, stderr not a terminal, printed:\n%q", errOut)
	}
}

// A port of the worker's that is taken says which flag gives another, as the
// embedded server's does: the sandbox's and the status page's.
func TestWorkerPortInUseNamesItsFlag(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	for _, c := range []struct{ flag, want string }{
		{"--sandbox-listen", "give this worker another --sandbox-listen (XYGROUP_SANDBOX_LISTEN)"},
		{"--http-addr", "give this worker another --http-addr (XYGROUP_HTTP_ADDR)"},
	} {
		args := map[string]string{"--embedded-listen": freeAddr(t), "--sandbox-listen": freeAddr(t), "--http-addr": freeAddr(t)}
		args[c.flag] = taken.Addr().String()
		_, _, err := runApp(context.Background(), "worker", "--sandbox", "--data-dir", t.TempDir(), "--log-level", "error",
			"--embedded-listen", args["--embedded-listen"], "--sandbox-listen", args["--sandbox-listen"], "--http-addr", args["--http-addr"])
		if msg := errorMessage(err); exitCode(err) != 1 || !strings.Contains(msg, "address already in use: stop what listens there, or "+c.want) {
			t.Errorf("%s taken: exit %d, %s", c.flag, exitCode(err), msg)
		}
	}
}
