package main

import (
	"context"
	"encoding/json"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/xygroup/xygroup/worker"
	"github.com/xygroup/xygroup/worker/ratelimit"
	wt "github.com/xygroup/xygroup/worker/workertest"
	"github.com/xygroup/xygroup/xylink/sandbox"
)

// status and events against a known state: two created, one failed, three
// commands parked for a meeting an hour away, one worker alive.
func TestStatusAndEventsShowAKnownState(t *testing.T) {
	srv := wt.StartNATS(t)
	sb := wt.StartSandbox(t, sandbox.Config{Rate: 1e6})
	if _, err := sb.AddMeeting(sandbox.MeetingSpec{Number: "m-later", StartsIn: sandbox.Duration(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	if _, err := sb.AddMeeting(sandbox.MeetingSpec{Number: "m-small", MaxGroups: 1}); err != nil {
		t.Fatal(err)
	}
	wt.StartWorker(t, srv, wt.Client(t, sb), worker.WithRate(20, nil))
	js := wt.JetStream(t, wt.Connect(t, srv))
	wt.AwaitStream(t, js, worker.StreamCommands)
	wt.Publish(t, js, "ok-1", wt.Command("ok-1", "m-1"))
	wt.Publish(t, js, "ok-2", wt.Command("ok-2", "m-2"))
	wt.Publish(t, js, "many", []byte(`{"commandId":"many","meetingRoomNumber":"m-small","groupCount":3}`))
	for _, id := range []string{"wait-1", "wait-2", "wait-3"} {
		wt.Publish(t, js, id, wt.Command(id, "m-later"))
	}
	wt.AwaitTerminal(t, js, 3, time.Minute)
	wt.AwaitConsumerIdle(t, js, 30*time.Second)
	url := srv.ClientURL()

	var st Status
	wt.Eventually(t, 30*time.Second, func() bool {
		out, errOut, err := runApp(context.Background(), "status", "--json", "--nats-url", url)
		if err != nil {
			t.Fatalf("status: %v %s", err, errOut)
		}
		st = Status{}
		if err := json.Unmarshal([]byte(out), &st); err != nil {
			t.Fatalf("status --json: %v\n%s", err, out)
		}
		// Heartbeats and the dispenser's lease come within a few seconds of the start.
		return len(st.Replicas) == 1 && st.Limiter != nil && len(st.Limiter.Enterprises) > 0 && st.Parked == 3
	}, "status showing the replica, the dispenser's lease and the parked commands")
	if st.Backlog != 0 || st.InFlight != 0 || st.Unacknowledged != 0 || st.Replicas[0].InFlight != 0 || len(st.Meetings) != 1 || st.Meetings[0].Meeting != "m-later" ||
		st.Meetings[0].Parked != 3 || st.Meetings[0].State != "waiting" || st.Limiter.Enterprises[wt.Enterprise].Rate != 20 {
		t.Fatalf("status = %+v", st)
	}
	// The dispenser's own count of its departures: a few commands and probes
	// (none in the last minute on a very slow machine), never over the rate.
	if e := st.Limiter.Enterprises[wt.Enterprise]; e.MaxWindow1m > 20 || e.ThrottledTotal != 0 {
		t.Fatalf("the lease shows %d requests in a second, %d 429s", e.MaxWindow1m, e.ThrottledTotal)
	}
	out, _, err := runApp(context.Background(), "status", "--nats-url", url)
	for _, want := range []string{"COMMANDS", "backlog 0", "PARKED", "3 command(s)", "m-later", "LIMITER", "dispenser", wt.Enterprise, "REPLICAS", "1 alive", "unacknowledged 0", "handling 0, background", "of 32 slots",
		"most in a second (last minute)", "429s (dispenser)"} {
		if err != nil || !strings.Contains(out, want) {
			t.Fatalf("status screen lacks %q (%v):\n%s", want, err, out)
		}
	}
	if !regexp.MustCompile(`max \d+ of 20\s`).MatchString(out) {
		t.Fatalf("status screen lacks the most requests in a second:\n%s", out)
	}

	out, _, err = runApp(context.Background(), "events", "--nats-url", url)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if err != nil || len(lines) != 6 { // 2 created, 1 failed, 3 waiting
		t.Fatalf("events: %v, %d lines:\n%s", err, len(lines), out)
	}
	out, _, _ = runApp(context.Background(), "events", "--nats-url", url, "--class", "too_many_groups")
	if strings.Count(out, "\n") != 1 || !strings.Contains(out, `"commandId":"many"`) {
		t.Fatalf("events --class too_many_groups:\n%s", out)
	}
	out, _, _ = runApp(context.Background(), "events", "--nats-url", url, "--meeting", "m-later", "--type", "waiting")
	if strings.Count(out, "\n") != 3 {
		t.Fatalf("events --meeting m-later --type waiting:\n%s", out)
	}
	out, _, _ = runApp(context.Background(), "events", "--nats-url", url, "--command", "ok-2", "--format", "table")
	if !strings.Contains(out, "COMMAND") || !strings.Contains(out, "ok-2") || strings.Contains(out, "ok-1") || !strings.Contains(out, "1 group(s)") {
		t.Fatalf("events --command ok-2 --format table:\n%s", out)
	}
	out, _, _ = runApp(context.Background(), "events", "--nats-url", url, "--since", "1h", "--type", "created")
	if strings.Count(out, "\n") != 2 {
		t.Fatalf("events --since 1h --type created:\n%s", out)
	}
	if _, _, err := runApp(context.Background(), "events", "--nats-url", url, "--since", "yesterday"); err == nil || exitCode(err) != 2 {
		t.Fatalf("a bad --since was accepted: %v", err)
	}
}

// The limiter's audit as the screen shows it: per enterprise, the most
// requests the dispenser let leave in a second against the rate, and the
// 429s reported.
func TestStatusScreenShowsTheLimitAudit(t *testing.T) {
	at := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	st := &Status{At: at, Limiter: &ratelimit.LeaseInfo{Replica: "xygroup/vm (16 of 16 shards)", Since: at.Add(-time.Hour),
		Enterprises: map[string]ratelimit.EnterpriseInfo{
			"ent-a": {Rate: 20, Granted10s: 195, MaxWindow1m: 20, GuardMs: 50, Throttled10m: 2, ThrottledTotal: 7},
			"ent-b": {Rate: 5, Granted10s: 3, MaxWindow1m: 2, GuardMs: 25},
		}}}
	var b strings.Builder
	printStatus(&b, st, 10)
	out := b.String()
	lines := map[string]string{}
	for _, l := range strings.Split(out, "\n") {
		if f := strings.Fields(l); len(f) > 0 {
			lines[f[0]] = strings.Join(f, " ")
		}
	}
	for ent, want := range map[string]string{
		"ent-a": "ent-a 20 19.5 (98%) max 20 of 20 0 50 ms 2 7",
		"ent-b": "ent-b 5 0.3 (6%) max 2 of 5 0 25 ms 0 0",
	} {
		if lines[ent] != want {
			t.Errorf("%s's line %q, want %q; the screen:\n%s", ent, lines[ent], want, out)
		}
	}
	if !strings.Contains(out, "most in a second (last minute)") {
		t.Errorf("no column for the most in a second:\n%s", out)
	}
	// The dispenser's name does not widen the enterprises' table.
	header := func(out string) string {
		for l := range strings.Lines(out) {
			if strings.HasPrefix(l, "  enterprise") {
				return l
			}
		}
		return ""
	}
	st.Limiter.Replica = "w"
	b.Reset()
	printStatus(&b, st, 10)
	if long, short := header(out), header(b.String()); long == "" || long != short {
		t.Errorf("the enterprises' header, with a dispenser of a long name:\n%s\nof a short one:\n%s", out, b.String())
	}
}
