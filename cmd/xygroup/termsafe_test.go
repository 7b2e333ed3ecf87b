package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/xygroup/xygroup/worker"
	"github.com/xygroup/xygroup/worker/ratelimit"
	wt "github.com/xygroup/xygroup/worker/workertest"
	"github.com/xygroup/xygroup/xylink/sandbox"
)

const (
	setTitle  = "\x1b]0;pwned\x07" // OSC 0: sets the terminal's title
	eraseLine = "\x1b[2K"          // CSI 2K: erases the line
)

// rawControl reports the first character of s a terminal would act on.
func rawControl(s string) (rune, bool) {
	for _, r := range s {
		if (r < 0x20 && r != '\n' && r != '\t' && r != ' ') || r == 0x7f || (r >= 0x80 && r <= 0x9f) || r == 0x202e || r == 0x2066 {
			return r, true
		}
	}
	return 0, false
}

func TestTermSafe(t *testing.T) {
	for in, want := range map[string]string{
		"m-" + setTitle + "x" + eraseLine: `m-\x1b]0;pwned\x07x\x1b[2K`,
		"a\tb\nc\rd":                      `a\x09b\x0ac\x0dd`,
		"\u009b2K \x7f \xff":              `\u009b2K \x7f \xff`,
		"abc\u202edcba \u2066x\u2069":     `abc\u202edcba \u2066x\u2069`,
		"分组1 café, 18961782725":           "分组1 café, 18961782725",
	} {
		if got := termSafe(in); got != want {
			t.Errorf("termSafe(%q) = %q, want %q", in, got, want)
		}
	}
	if got := termSafeLines("first " + eraseLine + "\nsecond"); got != "first \\x1b[2K\nsecond" {
		t.Errorf("termSafeLines = %q", got)
	}
}

// A command whose id and meeting carry escape sequences (the worker refuses
// it: its failure event quotes both): the table of events prints them escaped;
// the JSON output stays the exact JSON the worker published.
func TestEventsTableIsEscaped(t *testing.T) {
	meeting := "m-" + setTitle + eraseLine
	id := "c-" + eraseLine + "\u202e"
	srv := wt.StartNATS(t)
	sb := wt.StartSandbox(t, sandbox.Config{Rate: 1e6})
	wt.StartWorker(t, srv, wt.Client(t, sb))
	js := wt.JetStream(t, wt.Connect(t, srv))
	wt.AwaitStream(t, js, worker.StreamCommands)
	wt.AwaitStream(t, js, worker.StreamEvents)
	idJSON, _ := json.Marshal(id)
	meetingJSON, _ := json.Marshal(meeting)
	wt.Publish(t, js, "escaped", []byte(`{"commandId":`+string(idJSON)+`,"meetingRoomNumber":`+string(meetingJSON)+
		`,"mode":"manual","groupList":[{"groupName":"g","memberList":[{"id":1,"type":5,"participantNumber":"18961782725"}]}]}`))
	url := srv.ClientURL()

	var table string
	wt.Eventually(t, 30*time.Second, func() bool {
		out, errOut, err := runApp(context.Background(), "events", "--nats-url", url, "--format", "table")
		if err != nil {
			t.Fatalf("events --format table: %v %s", err, errOut)
		}
		table = out
		return strings.Count(out, "\n") >= 2
	}, "the command's event in the table")
	if r, found := rawControl(table); found {
		t.Fatalf("events --format table printed %U raw:\n%q", r, table)
	}
	if !strings.Contains(table, `m-\x1b]0;pwned\x07\x1b[2K`) || !strings.Contains(table, `c-\x1b[2K\u202e`) {
		t.Fatalf("the table does not show the fields escaped:\n%s", table)
	}

	out, _, err := runApp(context.Background(), "events", "--nats-url", url)
	var e struct {
		CommandID         string `json:"commandId"`
		MeetingRoomNumber string `json:"meetingRoomNumber"`
	}
	if err != nil || json.Unmarshal([]byte(strings.SplitN(out, "\n", 2)[0]), &e) != nil || e.CommandID != id || e.MeetingRoomNumber != meeting {
		t.Fatalf("events (json): %v, %q", err, out)
	}
	if strings.ContainsAny(out, "\x1b\x07") || !strings.Contains(out, `\u001b]0;pwned\u0007`) {
		t.Fatalf("the JSON output is not JSON's escapes: %q", out)
	}
}

// Every text field of the status screen is printed escaped.
func TestStatusScreenIsEscaped(t *testing.T) {
	evil := "x-" + setTitle + eraseLine + "\u009b2J\u202e"
	now := time.Now()
	st := &Status{
		At:       now,
		Meetings: []worker.ParkedMeeting{{EnterpriseID: evil, Meeting: evil, State: evil, Parked: 1, NextProbeAt: now}},
		Limiter:  &ratelimit.LeaseInfo{Replica: evil, Since: now, Enterprises: map[string]ratelimit.EnterpriseInfo{evil: {Rate: 1}}},
		Breakers: []worker.BreakerState{{EnterpriseID: evil, State: "open", Reason: evil, LastFailure: evil, OpenUntil: now}},
		Replicas: []worker.Replica{{Name: evil, StartedAt: now, SeenAt: now}},
	}
	var b strings.Builder
	printStatus(&b, st, 10)
	screen := b.String()
	if r, found := rawControl(screen); found {
		t.Fatalf("status printed %U raw:\n%q", r, screen)
	}
	if n := strings.Count(screen, `x-\x1b]0;pwned\x07\x1b[2K\u009b2J\u202e`); n != 9 {
		t.Fatalf("status shows the 9 fields escaped %d times:\n%s", n, screen)
	}
}
