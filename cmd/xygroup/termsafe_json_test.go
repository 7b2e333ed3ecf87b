package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/xygroup/xygroup/worker"
	wt "github.com/xygroup/xygroup/worker/workertest"
	"github.com/xygroup/xygroup/xylink/sandbox"
)

// `events` in its default format (json) prints each event as the
// stream holds it; JSON escapes C0 controls but not C1 controls (U+009B is
// CSI in one code point) nor bidi overrides (U+202E), which termSafe counts
// as acting on a terminal: a meeting number carrying them reaches the
// terminal raw unless escaped as \uXXXX, which decodes to the same value.
func TestEventsJSONIsEscaped(t *testing.T) {
	meeting := "m-\u009b2J\u202e"
	srv := wt.StartNATS(t)
	sb := wt.StartSandbox(t, sandbox.Config{Rate: 1e6})
	wt.StartWorker(t, srv, wt.Client(t, sb))
	js := wt.JetStream(t, wt.Connect(t, srv))
	wt.AwaitStream(t, js, worker.StreamCommands)
	wt.AwaitStream(t, js, worker.StreamEvents)
	meetingJSON, _ := json.Marshal(meeting)
	wt.Publish(t, js, "c1", []byte(`{"commandId":"c1","meetingRoomNumber":`+string(meetingJSON)+
		`,"mode":"manual","groupList":[{"groupName":"g","memberList":[{"id":1,"type":5,"participantNumber":"18961782725"}]}]}`))
	url := srv.ClientURL()
	var out string
	wt.Eventually(t, 30*time.Second, func() bool {
		o, errOut, err := runApp(context.Background(), "events", "--nats-url", url)
		if err != nil {
			t.Fatalf("events: %v %s", err, errOut)
		}
		out = o
		return strings.Contains(out, `"c1"`)
	}, "the command's event printed")
	if r, found := rawControl(out); found {
		t.Fatalf("events (json) printed %U raw: %q", r, out)
	}
	for line := range strings.Lines(out) {
		var ev struct {
			MeetingRoomNumber string `json:"meetingRoomNumber"`
		}
		if err := json.Unmarshal([]byte(line), &ev); err != nil || ev.MeetingRoomNumber != meeting {
			t.Errorf("escaped event decodes to meeting %q (%v), want %q: %s", ev.MeetingRoomNumber, err, meeting, line)
		}
	}
}

// JSON made safe decodes to what it was.
func TestJSONSafeKeepsTheValue(t *testing.T) {
	in := map[string]string{"a": "x\u009b\u202e\u2066y\u0085", "b": "plain ü 中文", "c": "\x1b]0;t\x07"}
	b, _ := json.Marshal(in)
	safe := jsonSafe(b)
	if r, found := rawControl(safe); found {
		t.Fatalf("%U left raw in %q", r, safe)
	}
	var back map[string]string
	if err := json.Unmarshal([]byte(safe), &back); err != nil {
		t.Fatal(err)
	}
	for k, v := range in {
		if back[k] != v {
			t.Errorf("%s: %q, want %q", k, back[k], v)
		}
	}
}

// A failed event quotes its command as published: a pretty-printed file's
// line breaks included. publish --wait and events print it on one line, as
// JSON lines are.
func TestFailedEventOfAPrettyPrintedCommandIsOneLine(t *testing.T) {
	srv := wt.StartNATS(t)
	sb := wt.StartSandbox(t, sandbox.Config{Rate: 1e6, Faults: sandbox.Faults{Fail: &sandbox.FixedAnswer{Status: 400, ErrorCode: 60001}}})
	wt.StartWorker(t, srv, wt.Client(t, sb))
	file := filepath.Join(t.TempDir(), "command.json")
	pretty := "{\n  \"commandId\": \"pretty-1\",\n  \"meetingRoomNumber\": \"910004217404\",\n  \"mode\": \"random\",\n  \"groupCount\": 2\n}\n"
	if err := os.WriteFile(file, []byte(pretty), 0o600); err != nil {
		t.Fatal(err)
	}
	url := srv.ClientURL()
	out, errOut, err := runApp(context.Background(), "publish", "--wait", "--timeout", "60s", "--nats-url", url, file)
	if exitCode(err) != 1 {
		t.Fatalf("publish --wait of a failing command: %v, want exit 1\n%s", err, errOut)
	}
	events, _, err := runApp(context.Background(), "events", "--nats-url", url)
	if err != nil {
		t.Fatal(err)
	}
	for what, printed := range map[string]string{"publish --wait": out, "events": events} {
		var ev struct {
			Class   string          `json:"class"`
			Command json.RawMessage `json:"command"`
		}
		if strings.Count(printed, "\n") != 1 || json.Unmarshal([]byte(printed), &ev) != nil || ev.Class != "rejected" || !strings.Contains(string(ev.Command), `"pretty-1"`) {
			t.Errorf("%s printed, not as one JSON line of the failed event:\n%s", what, printed)
		}
	}
}
