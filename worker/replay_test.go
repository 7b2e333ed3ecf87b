package worker_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/xygroup/xygroup/worker"
	"github.com/xygroup/xygroup/worker/contract"
	wt "github.com/xygroup/xygroup/worker/workertest"
	"github.com/xygroup/xygroup/xylink/sandbox"
)

// logged reports whether logs hold a line at level for commandID whose message
// contains every one of parts.
func logged(logs string, level, commandID string, parts ...string) bool {
	for line := range strings.Lines(logs) {
		var l struct {
			Level     string `json:"level"`
			CommandID string `json:"commandId"`
			Message   string `json:"message"`
		}
		if json.Unmarshal([]byte(line), &l) != nil || l.Level != level || l.CommandID != commandID {
			continue
		}
		all := true
		for _, p := range parts {
			all = all && strings.Contains(l.Message, p)
		}
		if all {
			return true
		}
	}
	return false
}

// The replay mark counts only on xylink.groups.replay, which only users allowed
// to replay may publish. A failed command published again on
// xylink.groups.create with a forged Xygroup-Replay header is a plain command:
// no API call, its terminal event repeated, and a warning. On
// xylink.groups.replay without the header it is a plain command too; with it,
// it is tried again.
func TestReplayMarkCountsOnlyOnTheReplaySubject(t *testing.T) {
	srv := wt.StartNATS(t)
	sb := wt.StartSandbox(t, sandbox.Config{Rate: 1e6, Faults: sandbox.Faults{Fail: &sandbox.FixedAnswer{Status: 400, ErrorCode: 60001}}})
	var logs wt.SyncBuffer
	wt.StartWorker(t, srv, wt.Client(t, sb), worker.WithLogger(zerolog.New(&logs)))
	js := wt.JetStream(t, wt.Connect(t, srv))
	const id = "forged-1"
	body := wt.Command(id, "m-forged")
	wt.Publish(t, js, id, body)
	first := wt.AwaitTerminal(t, js, 1, time.Minute)[id]
	if len(first) != 1 || !strings.HasPrefix(first[0].Subject, worker.SubjectFailed+".") {
		t.Fatalf("first: %v", first)
	}
	sb.SetFaults(sandbox.Faults{}) // a try now would create the groups
	calls := sb.Stats().Requests

	// A publisher forges the mark on the commands subject.
	wt.Publish(t, js, id+"-forged", body, worker.HeaderReplay, "forged")
	wt.AwaitConsumerIdle(t, js, 30*time.Second)
	if got := sb.Stats().Requests; got != calls {
		t.Fatalf("a forged replay was sent to the API: %d requests, was %d", got, calls)
	}
	if got := wt.TerminalCount(t, js); got != 1 {
		t.Fatalf("%d terminal events, want 1 (the failure, repeated under its own Nats-Msg-Id)", got)
	}
	if !logged(logs.String(), "warn", id, "replay mark ignored", worker.SubjectReplay) {
		t.Fatalf("no warning that the replay mark was ignored:\n%s", logs.String())
	}

	// The replay subject without the mark: a plain command, with a warning.
	wt.PublishOn(t, js, worker.SubjectReplay, id+"-unmarked", body)
	wt.AwaitConsumerIdle(t, js, 30*time.Second)
	if got := sb.Stats().Requests; got != calls {
		t.Fatalf("an unmarked command on the replay subject was sent to the API: %d requests, was %d", got, calls)
	}
	if !logged(logs.String(), "warn", id, "without a "+worker.HeaderReplay+" header") {
		t.Fatalf("no warning about the missing replay id:\n%s", logs.String())
	}

	// A replay, on its subject: tried again, with an outcome of its own.
	wt.PublishOn(t, js, worker.SubjectReplay, id+"-replay", body, worker.HeaderReplay, "r-test")
	wt.Eventually(t, 30*time.Second, func() bool { return wt.TerminalCount(t, js) >= 2 }, "an outcome of the replay")
	wt.AwaitConsumerIdle(t, js, 30*time.Second)
	if st := sb.Stats(); st.ByAnswer["200"] != 1 || len(st.DuplicateCreates) != 0 {
		t.Fatalf("sandbox: %v, duplicates %v", st.ByAnswer, st.DuplicateCreates)
	}
	s, err := js.Stream(context.Background(), worker.StreamEvents)
	if err != nil {
		t.Fatal(err)
	}
	created, err := s.GetLastMsgForSubject(context.Background(), worker.SubjectCreated)
	if err != nil {
		t.Fatalf("no created event: %v", err)
	}
	if msgID := created.Header.Get(nats.MsgIdHdr); msgID != "xygroup.terminal."+wt.Enterprise+"."+id+".replay.r-test" {
		t.Fatalf("created event %s: %s", msgID, created.Data)
	}
}

// The id a replay gives a command that does not name itself counts only where
// the replay mark does: on xylink.groups.create, a command that is not a JSON
// object with a forged mark and id is named by its own Nats-Msg-Id; on
// xylink.groups.replay, by the id the replay gave it.
func TestReplayCommandIDCountsOnlyWithTheReplayMark(t *testing.T) {
	srv := wt.StartNATS(t)
	sb := wt.StartSandbox(t, sandbox.Config{Rate: 1e6})
	wt.StartWorker(t, srv, wt.Client(t, sb))
	js := wt.JetStream(t, wt.Connect(t, srv))
	wt.Publish(t, js, "forged-array", []byte(`[1]`), worker.HeaderReplay, "forged", contract.HeaderReplayCommandID, "victim")
	wt.PublishOn(t, js, worker.SubjectReplay, "xygroup.replay.r1.replayed-array", []byte(`[2]`),
		worker.HeaderReplay, "r1", contract.HeaderReplayCommandID, "replayed-array")
	evs := wt.AwaitTerminal(t, js, 2, time.Minute)
	for _, id := range []string{"forged-array", "replayed-array"} {
		if e := evs[id]; len(e) != 1 || e[0].Subject != worker.SubjectFailed+".invalid_command" {
			t.Errorf("%s: events %v (events of %v)", id, e, keys(evs))
		}
	}
	if e := evs["victim"]; len(e) != 0 {
		t.Errorf("a forged replay id named a command: %v", e)
	}
}
