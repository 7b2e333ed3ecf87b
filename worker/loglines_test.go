package worker_test

import (
	"encoding/json"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/xygroup/xygroup/worker"
	wt "github.com/xygroup/xygroup/worker/workertest"
	"github.com/xygroup/xygroup/xylink/sandbox"
)

// Every log line about a command names it, its tenant and its meeting, on each
// path: created, failed by the API, parked and ended by its deadline (by the
// prober, which handles meetings rather than commands). A normal run and stop
// log nothing at warn or above.
func TestCommandLogLinesNameTheCommand(t *testing.T) {
	srv := wt.StartNATS(t)
	sb := wt.StartSandbox(t, sandbox.Config{Rate: 1e6})
	if _, err := sb.AddMeeting(sandbox.MeetingSpec{Number: "m-later", StartsIn: sandbox.Duration(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	if _, err := sb.AddMeeting(sandbox.MeetingSpec{Number: "m-small", MaxGroups: 1}); err != nil {
		t.Fatal(err)
	}
	var logs wt.SyncBuffer
	w := wt.StartWorker(t, srv, wt.Client(t, sb), worker.WithLogger(zerolog.New(&logs).Level(zerolog.DebugLevel)),
		worker.WithProbeBackoff(worker.Backoff{Initial: 200 * time.Millisecond, Max: 400 * time.Millisecond}))
	js := wt.JetStream(t, wt.Connect(t, srv))
	wt.Publish(t, js, "log-ok", wt.Command("log-ok", "m-log-ok"))
	wt.Publish(t, js, "log-many", []byte(`{"commandId":"log-many","meetingRoomNumber":"m-small","mode":"random","groupCount":3}`))
	wt.Publish(t, js, "log-late", wt.Command("log-late", "m-later", "deadline", strconv.Quote(time.Now().Add(2*time.Second).UTC().Format(time.RFC3339Nano))))
	events := wt.AwaitTerminal(t, js, 3, time.Minute)
	for id, want := range map[string]string{"log-ok": worker.SubjectCreated, "log-many": worker.SubjectFailed + ".too_many_groups",
		"log-late": worker.SubjectFailed + ".meeting_not_started"} {
		if evs := events[id]; evs[len(evs)-1].Subject != want {
			t.Fatalf("%s ended on %s, want %s", id, evs[len(evs)-1].Subject, want)
		}
	}
	if err := w.Stop(); err != nil {
		t.Fatal(err)
	}

	about := map[string]int{}
	for _, line := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
		var f map[string]any
		if err := json.Unmarshal([]byte(line), &f); err != nil {
			t.Fatalf("not a JSON line: %s", line)
		}
		if lvl := f["level"]; lvl == "warn" || lvl == "error" {
			t.Errorf("a normal run logged at %s: %s", lvl, line)
		}
		msg, _ := f["message"].(string)
		switch msg {
		case "groups created", "command failed", "parked until the meeting starts":
			about[msg]++
		default:
			if f["commandId"] == nil {
				continue
			}
		}
		for _, key := range []string{"commandId", "enterpriseId", "meetingRoomNumber"} {
			if s, _ := f[key].(string); s == "" {
				t.Errorf("a line about a command lacks %s: %s", key, line)
			}
		}
		if strings.Count(line, `"enterpriseId"`) > 1 || strings.Count(line, `"commandId"`) > 1 {
			t.Errorf("a field twice: %s", line)
		}
	}
	t.Logf("lines about commands: %v", about)
	if about["groups created"] != 1 || about["command failed"] != 2 || about["parked until the meeting starts"] != 1 {
		t.Errorf("lines about commands: %v", about)
	}
}
