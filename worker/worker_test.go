package worker_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/xygroup/xygroup/schemas"
	"github.com/xygroup/xygroup/worker"
	wt "github.com/xygroup/xygroup/worker/workertest"
	"github.com/xygroup/xygroup/xylink/sandbox"
)

// schemaOf names the schema of an event by its subject.
func schemaOf(subject string) string {
	switch {
	case subject == worker.SubjectCreated:
		return schemas.Created
	case subject == worker.SubjectWaiting:
		return schemas.Waiting
	}
	return schemas.Failed
}

// 500 commands, three workers on their own connections: 500 created events, each
// valid against its schema, one per command, and one API success per meeting.
func TestFiveHundredCommandsThreeWorkers(t *testing.T) {
	srv := wt.StartNATS(t)
	sb := wt.StartSandbox(t, sandbox.Config{Rate: 100000})
	c := wt.Client(t, sb)
	for range 3 {
		wt.StartWorker(t, srv, c, worker.WithConcurrency(16))
	}
	js := wt.JetStream(t, wt.Connect(t, srv))
	const n = 500
	for i := range n {
		id := fmt.Sprintf("cmd-%03d", i)
		wt.Publish(t, js, id, wt.Command(id, fmt.Sprintf("9100%05d", i)))
	}
	events := wt.AwaitTerminal(t, js, n, 2*time.Minute)
	for id, evs := range events {
		if len(evs) != 1 || evs[0].Subject != worker.SubjectCreated {
			t.Fatalf("%s: %d events, first on %s", id, len(evs), evs[0].Subject)
		}
		if err := schemas.Validate(schemas.Created, evs[0].Data); err != nil {
			t.Fatalf("%s: created event against its schema: %v\n%s", id, err, evs[0].Data)
		}
	}
	if got := wt.TerminalCount(t, js); got != n {
		t.Fatalf("events stream holds %d terminal events, want %d", got, n)
	}
	st := sb.Stats()
	if st.ByAnswer["200"] != n || len(st.DuplicateCreates) != 0 {
		t.Fatalf("sandbox: %d successes, duplicates %v", st.ByAnswer["200"], st.DuplicateCreates)
	}
}

// Each terminal class lands on its subject with its fields, the original command
// byte for byte, CloudEvents headers and the command's traceparent.
func TestEveryTerminalClass(t *testing.T) {
	srv := wt.StartNATS(t)
	sb := wt.StartSandbox(t, sandbox.Config{Rate: 100000})
	c := wt.Client(t, sb)
	wt.StartWorker(t, srv, c)
	js := wt.JetStream(t, wt.Connect(t, srv))

	mustMeeting := func(spec sandbox.MeetingSpec) {
		if _, err := sb.AddMeeting(spec); err != nil {
			t.Fatal(err)
		}
	}
	mustMeeting(sandbox.MeetingSpec{Number: "m-open"})
	if _, err := c.CreateGroups(t.Context(), wt.Enterprise, manualReq("m-open")); err != nil {
		t.Fatal(err)
	}
	mustMeeting(sandbox.MeetingSpec{Number: "m-small", MaxGroups: 1})
	mustMeeting(sandbox.MeetingSpec{Number: "m-later", StartsIn: sandbox.Duration(time.Hour)})
	mustMeeting(sandbox.MeetingSpec{Number: "m-reject", Fail: &sandbox.FixedAnswer{Status: 404, ErrorCode: 60404, UserMessage: "error.meeting.unknown"}})
	// 503 with the platform's body: it answered, and did nothing (a 502,
	// whose create may have taken effect, is tried for a minute past the
	// deadline first, to reconcile it).
	mustMeeting(sandbox.MeetingSpec{Number: "m-down", Fail: &sandbox.FixedAnswer{Status: 503, ErrorCode: sandbox.CodeUnavailable}})
	soon := fmt.Sprintf("%q", time.Now().Add(1500*time.Millisecond).UTC().Format(time.RFC3339Nano))
	two := `[{"groupName":"a","memberList":[{"id":1,"type":5}]},{"groupName":"b","memberList":[{"id":2,"type":5}]}]`

	cases := []struct {
		id, class string
		payload   []byte
		errorCode int
		status    int
	}{
		{"c-created", "", wt.Command("c-created", "m-ok"), 0, 0},
		{"c-invalid", "invalid_command", []byte(`{"commandId":"c-invalid","meetingRoomNumber":12}`), 0, 0},
		{"c-open", "already_open", wt.Command("c-open", "m-open"), 66684, 400},
		{"c-many", "too_many_groups", []byte(`{"commandId":"c-many","meetingRoomNumber":"m-small","mode":"manual","groupList":` + two + `}`), 66685, 400},
		{"c-later", "meeting_not_started", wt.Command("c-later", "m-later", "deadline", soon), 66620, 400},
		{"c-reject", "rejected", wt.Command("c-reject", "m-reject"), 60404, 404},
		{"c-down", "unavailable", wt.Command("c-down", "m-down", "deadline", soon), sandbox.CodeUnavailable, 503},
	}
	const trace = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	for i := range cases {
		// Pretty-printed, to check that the command comes back byte for byte.
		var buf bytes.Buffer
		_ = json.Indent(&buf, cases[i].payload, "", "  ")
		cases[i].payload = buf.Bytes()
		wt.Publish(t, js, cases[i].id, cases[i].payload, "traceparent", trace)
	}
	events := wt.AwaitTerminal(t, js, len(cases), time.Minute)
	for _, c := range cases {
		var evs []wt.Event
		for _, e := range events[c.id] {
			if e.Terminal() {
				evs = append(evs, e)
			} else if c.class != "meeting_not_started" {
				t.Errorf("%s: unexpected %s event", c.id, e.Subject)
			} else if err := schemas.Validate(schemas.Waiting, e.Data); err != nil {
				t.Errorf("%s: waiting event: %v", c.id, err)
			}
		}
		if len(evs) != 1 {
			t.Errorf("%s: %d terminal events", c.id, len(evs))
			continue
		}
		e := evs[0]
		wantSubject := worker.SubjectCreated
		if c.class != "" {
			wantSubject = worker.SubjectFailed + "." + c.class
		}
		if e.Subject != wantSubject {
			t.Errorf("%s: subject %s, want %s (%s)", c.id, e.Subject, wantSubject, e.Data)
			continue
		}
		if err := schemas.Validate(schemaOf(e.Subject), e.Data); err != nil {
			t.Errorf("%s: %v", c.id, err)
		}
		for _, h := range []string{"ce-specversion", "ce-id", "ce-type", "ce-source", "ce-time", "Nats-Msg-Id"} {
			if e.Header.Get(h) == "" {
				t.Errorf("%s: no %s header", c.id, h)
			}
		}
		if e.Header.Get("traceparent") != trace || e.Header.Get("ce-id") != e.Fields["eventId"] {
			t.Errorf("%s: traceparent %q, ce-id %q", c.id, e.Header.Get("traceparent"), e.Header.Get("ce-id"))
		}
		for _, f := range []string{"eventId", "commandId", "enterpriseId", "meetingRoomNumber", "attempts", "occurredAt"} {
			if _, ok := e.Fields[f]; !ok {
				t.Errorf("%s: no %s", c.id, f)
			}
		}
		if c.class == "" {
			continue
		}
		var failed struct {
			Class      string          `json:"class"`
			ErrorCode  int             `json:"errorCode"`
			HTTPStatus int             `json:"httpStatus"`
			Command    json.RawMessage `json:"command"`
			DevMsg     string          `json:"developerMessage"`
		}
		_ = json.Unmarshal(e.Data, &failed)
		statusOK := failed.HTTPStatus == c.status || (c.class == "meeting_not_started" && failed.HTTPStatus == 0) // ended while parked: no call of its own
		if failed.Class != c.class || failed.ErrorCode != c.errorCode || !statusOK {
			t.Errorf("%s: class %s errorCode %d httpStatus %d", c.id, failed.Class, failed.ErrorCode, failed.HTTPStatus)
		}
		if !bytes.Contains(e.Data, c.payload) {
			t.Errorf("%s: the original command is not in the event byte for byte:\n%s", c.id, e.Data)
		}
		if failed.DevMsg == "" {
			t.Errorf("%s: no developerMessage", c.id)
		}
	}
	later := events["c-later"]
	if len(later) != 2 || later[0].Subject != worker.SubjectWaiting || !strings.Contains(string(later[1].Data), "deadline") {
		t.Errorf("meeting_not_started: want a waiting event, then a failure that names the deadline: %v", later)
	}
}
