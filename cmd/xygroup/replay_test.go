package main

import (
	"context"
	"encoding/json"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/xygroup/xygroup/worker/commands"
	wt "github.com/xygroup/xygroup/worker/workertest"
	"github.com/xygroup/xygroup/xylink"
	"github.com/xygroup/xygroup/xylink/sandbox"
)

var resumeLine = regexp.MustCompile(`(?m)^replay (\S+): resume with: (.+)$`)

// replayStart is the id and the resume command a replay printed first.
func replayStart(t *testing.T, stderr string) (string, string) {
	t.Helper()
	m := resumeLine.FindStringSubmatch(stderr)
	if m == nil {
		t.Fatalf("no resume command printed:\n%s", stderr)
	}
	return m[1], m[2]
}

func summaryOf(t *testing.T, stdout string) commands.Summary {
	t.Helper()
	var sum commands.Summary
	if err := json.Unmarshal([]byte(strings.TrimSpace(stdout)), &sum); err != nil {
		t.Fatalf("summary %q: %v", stdout, err)
	}
	return sum
}

// "--since 1h" is resolved once: the dry run and the real run after it are one
// replay with one id and one resume command, with absolute times; that
// command, run as printed, is the same replay again and sends nothing twice.
func TestReplayWithRelativeTimesResumesByItsPrintedCommand(t *testing.T) {
	srv := wt.StartNATS(t)
	sb := wt.StartSandbox(t, sandbox.Config{Rate: 1e6, Faults: sandbox.Faults{Fail: &sandbox.FixedAnswer{Status: 400, ErrorCode: 60001}}})
	wt.StartWorker(t, srv, wt.Client(t, sb))
	js := wt.JetStream(t, wt.Connect(t, srv))
	for _, id := range []string{"rel-1", "rel-2", "rel-3"} {
		wt.Publish(t, js, id, wt.Command(id, "m-"+id))
	}
	wt.AwaitTerminal(t, js, 3, time.Minute)
	sb.SetFaults(sandbox.Faults{})
	conn := []string{"--nats-url", srv.ClientURL(), "--no-progress", "--timeout", "2m"}
	args := append([]string{"replay", "--since", "1h", "--class", "rejected"}, conn...)

	out, errOut, err := runApp(context.Background(), append(args, "--dry-run")...)
	if err != nil || !strings.Contains(out, "would publish 3 command(s)") {
		t.Fatalf("dry run: %v\n%s%s", err, out, errOut)
	}
	dryID, dryResume := replayStart(t, errOut)
	if !regexp.MustCompile(`^xygroup replay --class rejected --since \S+Z --until \S+Z$`).MatchString(dryResume) {
		t.Fatalf("resume command %q: want the class and absolute times", dryResume)
	}

	out, errOut, err = runApp(context.Background(), args...)
	if err != nil {
		t.Fatalf("replay: %v\n%s", err, errOut)
	}
	id, resume := replayStart(t, errOut)
	if id != dryID || resume != dryResume {
		t.Fatalf("the dry run printed %s %q, the real run %s %q", dryID, dryResume, id, resume)
	}
	if sum := summaryOf(t, out); sum.Published != 3 || sum.Created != 3 {
		t.Fatalf("replay: %+v", sum)
	}

	// The printed command, as a user pastes it.
	fields := strings.Fields(resume)
	out, errOut, err = runApp(context.Background(), append(fields[1:], conn...)...)
	if err != nil {
		t.Fatalf("%s: %v\n%s", resume, err, errOut)
	}
	again, againResume := replayStart(t, errOut)
	if again != id || againResume != resume || !strings.Contains(errOut, "resuming replay "+id) {
		t.Fatalf("the resume command ran replay %s (%q), want %s resumed:\n%s", again, againResume, id, errOut)
	}
	if sum := summaryOf(t, out); sum.Published != 0 || sum.AlreadyReplayed != 3 || sum.Created != 3 {
		t.Fatalf("resumed: %+v", sum)
	}
	if st := sb.Stats(); st.ByAnswer["200"] != 3 || len(st.DuplicateCreates) != 0 {
		t.Fatalf("sandbox: %v, duplicates %d", st.ByAnswer, len(st.DuplicateCreates))
	}
}

// A replay whose commands get no outcome ends with an error naming them.
func TestReplayPendingNamesItsCommands(t *testing.T) {
	srv := wt.StartNATS(t)
	sb := wt.StartSandbox(t, sandbox.Config{Rate: 1e6})
	if _, err := sb.AddMeeting(sandbox.MeetingSpec{Number: "m-one", MaxGroups: 1}); err != nil {
		t.Fatal(err)
	}
	w := wt.StartWorker(t, srv, wt.Client(t, sb))
	js := wt.JetStream(t, wt.Connect(t, srv))
	wt.Publish(t, js, "pend-1", []byte(`{"commandId":"pend-1","meetingRoomNumber":"m-one","groupCount":3}`))
	wt.AwaitTerminal(t, js, 1, time.Minute)
	if err := w.Stop(); err != nil { // no worker: the replayed command stays pending
		t.Fatal(err)
	}
	out, errOut, err := runApp(context.Background(), "replay", "--nats-url", srv.ClientURL(), "--class", "too_many_groups",
		"--no-progress", "--timeout", "2s")
	if err == nil || exitCode(err) != 1 {
		t.Fatalf("pending replay: exit %v\n%s", err, errOut)
	}
	id, _ := replayStart(t, errOut)
	want := "replay " + id + ": 1 command is still pending after 2s: pend-1"
	if errorMessage(err) != want {
		t.Fatalf("pending replay: error %q, want %q", errorMessage(err), want)
	}
	if sum := summaryOf(t, out); sum.Pending != 1 || len(sum.PendingIDs) != 1 || sum.PendingIDs[0] != "pend-1" {
		t.Fatalf("summary %+v", sum)
	}
}

// A class, type or format that does not exist is a usage error that lists the
// valid ones; nothing is connected to.
func TestReplayAndEventsRefuseUnknownValues(t *testing.T) {
	var classes []string
	for _, c := range xylink.Classes {
		classes = append(classes, string(c))
	}
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"replay", "--class", "bogus"}, append([]string{`"bogus"`}, classes...)},
		{[]string{"replay", "--class", "rejected,bogus", "--dry-run"}, append([]string{`"bogus"`}, classes...)},
		{[]string{"events", "--class", "bogus"}, append([]string{`"bogus"`}, classes...)},
		{[]string{"events", "--type", "bogus"}, []string{`"bogus"`, "created", "failed", "waiting"}},
		{[]string{"replay", "--bogus"}, []string{"unknown flag --bogus", "'xygroup replay --help'"}},
		{[]string{"replay", "--deadline", "soon"}, []string{`"soon"`, "RFC 3339", "duration"}},
		{[]string{"replay", "--deadline", "2020-01-01T00:00:00Z"}, []string{"has passed"}},
	} {
		// An address nothing listens on: a usage error must come before any connection.
		_, _, err := runApp(context.Background(), append(tc.args, "--nats-url", "nats://127.0.0.1:1")...)
		if err == nil || exitCode(err) != 2 {
			t.Errorf("xygroup %s: %v (exit %d), want exit 2", strings.Join(tc.args, " "), err, exitCode(err))
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("xygroup %s: %q does not name %s", strings.Join(tc.args, " "), err, w)
			}
		}
	}
}
