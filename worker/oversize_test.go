package worker_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/rs/zerolog"

	"github.com/xygroup/xygroup/schemas"
	"github.com/xygroup/xygroup/worker"
	wt "github.com/xygroup/xygroup/worker/workertest"
	"github.com/xygroup/xygroup/xylink/sandbox"
)

// Commands whose failed event would not fit NATS's payload limit if the command
// were embedded as is (escaped 6×, or simply too large) end like any other
// invalid command, and the valid commands published after them all complete on a
// worker with only two slots. The commands stream has no per-message limit
// here, as an operator's stream may not: the worker's own refuses commands
// larger than CommandsMaxMsgBytes to their publisher.
func TestOversizedCommandsDoNotBlockTheQueue(t *testing.T) {
	srv := wt.StartNATS(t)
	sb := wt.StartSandbox(t, sandbox.Config{Rate: 100000})
	logs := &wt.SyncBuffer{}
	w := wt.StartWorker(t, srv, wt.Client(t, sb), worker.WithConcurrency(2), worker.WithLogger(zerolog.New(logs)),
		worker.WithStreams(worker.StreamSettings{AckWait: 2 * time.Second, CommandsMaxMsgSize: -1}))
	nc := wt.Connect(t, srv)
	js := wt.JetStream(t, nc)
	maxPayload := int(nc.MaxPayload())

	// Each kind, built around its commandId and meeting.
	kinds := map[string]func(id string) []byte{
		// Not JSON (a raw control character in a string): embedded as a JSON
		// string, each U+0001 would become \u0001.
		"ctrl": func(id string) []byte {
			return fmt.Appendf(nil, `{"commandId":%q,"meetingRoomNumber":"m-%s","groupName":"%s"}`, id, id, bytes.Repeat([]byte{1}, 200<<10))
		},
		// Not JSON (unterminated): each < would become \u003c.
		"lt": func(id string) []byte {
			return fmt.Appendf(nil, `{"commandId":%q,"meetingRoomNumber":"m-%s","groupName":"%s`, id, id, bytes.Repeat([]byte("<"), 180<<10))
		},
		// Not UTF-8, and larger than the command limit: Base64 alone is 1.2 MiB.
		"binary": func(id string) []byte {
			return append(fmt.Appendf(nil, `{"commandId":%q,"meetingRoomNumber":"m-%s","groupName":"`, id, id), bytes.Repeat([]byte{0xff, 0xfe, 'a'}, 300<<10)...)
		},
		// Valid JSON under the command limit that fails the schema; as stored
		// again (the idempotency record re-encodes it) each < becomes \u003c.
		"json-lt": func(id string) []byte {
			return fmt.Appendf(nil, `{"commandId":%q,"meetingRoomNumber":"m-%s","groupName":"%s"}`, id, id, strings.Repeat("<", 250<<10))
		},
		// Valid JSON just under NATS's payload limit: the stream takes it, the
		// worker refuses it, and it cannot be embedded whole.
		"json-huge": func(id string) []byte {
			return fmt.Appendf(nil, `{"commandId":%q,"meetingRoomNumber":"m-%s","groupName":"%s"}`, id, id, strings.Repeat("x", maxPayload-4<<10))
		},
	}
	bad := map[string][]byte{}
	for kind, build := range kinds {
		for i := range 3 {
			id := fmt.Sprintf("big-%s-%d", kind, i)
			bad[id] = build(id)
			wt.Publish(t, js, id, bad[id])
		}
	}
	// An API answer nearly as large as the client reads (1 MiB), whose message
	// would be escaped 6× in the event.
	loud := strings.Repeat("<", 900<<10)
	if _, err := sb.AddMeeting(sandbox.MeetingSpec{Number: "m-loud", Fail: &sandbox.FixedAnswer{Status: 400, ErrorCode: 60001, UserMessage: loud}}); err != nil {
		t.Fatal(err)
	}
	const rejected = 2
	for i := range rejected {
		id := fmt.Sprintf("loud-%d", i)
		wt.Publish(t, js, id, wt.Command(id, "m-loud"))
	}
	const valid = 20
	for i := range valid {
		id := fmt.Sprintf("good-%d", i)
		wt.Publish(t, js, id, wt.Command(id, "m-"+id))
	}

	events, _ := wt.CollectTerminal(t, js, len(bad)+rejected+valid, 60*time.Second)
	created := 0
	for i := range valid {
		if evs := events[fmt.Sprintf("good-%d", i)]; len(evs) == 1 && evs[0].Subject == worker.SubjectCreated {
			created++
		}
	}
	ended := 0
	for id := range bad {
		if len(events[id]) > 0 {
			ended++
		}
	}
	for i := range rejected {
		if len(events[fmt.Sprintf("loud-%d", i)]) > 0 {
			ended++
		}
	}
	if created != valid || ended != len(bad)+rejected {
		t.Fatalf("after 60 s: %d of %d valid commands created, %d of %d oversized commands or answers ended; log: %s",
			created, valid, ended, len(bad)+rejected, lastLines(logs.String(), 2))
	}
	for i := range rejected {
		id := fmt.Sprintf("loud-%d", i)
		evs := events[id]
		if len(evs) != 1 || evs[0].Subject != worker.SubjectFailed+".rejected" {
			t.Errorf("%s: %d events, first on %s", id, len(evs), evs[0].Subject)
			continue
		}
		if err := schemas.Validate(schemas.Failed, evs[0].Data); err != nil {
			t.Errorf("%s: %v", id, err)
		}
		if msg, _ := evs[0].Fields["userMessage"].(string); !strings.HasPrefix(msg, "<<<<") || len(evs[0].Data) > 64<<10 {
			t.Errorf("%s: userMessage of %d bytes in an event of %d", id, len(msg), len(evs[0].Data))
		}
	}

	for id, payload := range bad {
		evs := events[id]
		if len(evs) != 1 || evs[0].Subject != worker.SubjectFailed+".invalid_command" {
			t.Errorf("%s: %d events, first on %s", id, len(evs), evs[0].Subject)
			continue
		}
		data := evs[0].Data
		if err := schemas.Validate(schemas.Failed, data); err != nil {
			t.Errorf("%s: %v", id, err)
		}
		var f struct {
			MeetingRoomNumber string          `json:"meetingRoomNumber"`
			Command           json.RawMessage `json:"command"`
			Encoding          string          `json:"commandEncoding"`
			Truncated         bool            `json:"commandTruncated"`
			SHA256            string          `json:"commandSha256"`
		}
		if err := json.Unmarshal(data, &f); err != nil {
			t.Fatalf("%s: %v", id, err)
		}
		got := carried(t, f.Command, f.Encoding)
		sum := sha256.Sum256(payload)
		// Whatever fits whole in Base64 is carried whole; only the rest is cut.
		fitsWhole := base64.StdEncoding.EncodedLen(len(payload)) < maxPayload-64<<10
		switch {
		case f.Truncated:
			if fitsWhole {
				t.Errorf("%s: %d bytes cut although their Base64 fits", id, len(payload))
			}
			if f.SHA256 != hex.EncodeToString(sum[:]) || !bytes.HasPrefix(payload, got) || len(got) == 0 {
				t.Errorf("%s: cut command: sha256 %q, %d bytes not a prefix of the command", id, f.SHA256, len(got))
			}
		case !bytes.Equal(got, payload):
			t.Errorf("%s: command not carried as received (%d bytes of %d)", id, len(got), len(payload))
		}
		t.Logf("%s: %d bytes, event %d bytes, encoding %q, truncated %v", id, len(payload), len(data), f.Encoding, f.Truncated)
		if len(data) > maxPayload {
			t.Errorf("%s: event of %d bytes", id, len(data))
		}
		if strings.HasPrefix(id, "big-json") && f.MeetingRoomNumber != "m-"+id {
			t.Errorf("%s: meetingRoomNumber %q", id, f.MeetingRoomNumber)
		}
		// The terminal event is recorded, so a later command with this id gets
		// this event again rather than a second one.
		st, err := worker.LookupCommand(context.Background(), js, wt.Enterprise, id)
		if err != nil || st.Terminal == "" {
			t.Errorf("%s: terminal event not recorded: %+v %v", id, st, err)
		}
	}
	for i := range valid {
		id := fmt.Sprintf("good-%d", i)
		if err := schemas.Validate(schemas.Created, events[id][0].Data); err != nil {
			t.Errorf("%s: %v", id, err)
		}
	}
	wt.AwaitConsumerIdle(t, js, 30*time.Second)
	if n := wt.TerminalCount(t, js); n != len(bad)+rejected+valid {
		t.Errorf("%d terminal events for %d commands", n, len(bad)+rejected+valid)
	}
	// Every handling, its settling included, was kept alive: nothing went back
	// to the stream for another slot.
	if n := testutil.ToFloat64(w.Metrics().Redeliveries); n != 0 {
		t.Errorf("%v redeliveries", n)
	}
}

// carried decodes a failed event's command field.
func carried(t *testing.T, cmd json.RawMessage, encoding string) []byte {
	t.Helper()
	if len(cmd) == 0 || cmd[0] != '"' {
		return cmd
	}
	var s string
	if err := json.Unmarshal(cmd, &s); err != nil {
		t.Fatal(err)
	}
	if encoding == "base64" {
		b, err := base64.StdEncoding.DecodeString(s)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	return []byte(s)
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	for i, l := range lines {
		if len(l) > 300 {
			lines[i] = l[:300] + "…"
		}
	}
	return strings.Join(lines, "\n")
}

// An events stream whose operator set a message size below the server's payload
// limit, after the worker read its configuration: the refused event is shaped
// again to the stream's limit rather than retried as it was.
func TestEventsFitTheEventsStreamLimit(t *testing.T) {
	srv := wt.StartNATS(t)
	sb := wt.StartSandbox(t, sandbox.Config{Rate: 100000})
	w := wt.StartWorker(t, srv, wt.Client(t, sb), worker.WithConcurrency(2))
	js := wt.JetStream(t, wt.Connect(t, srv))
	wt.Publish(t, js, "first", wt.Command("first", "m-first"))
	wt.AwaitTerminal(t, js, 1, 30*time.Second)

	const streamMax = 64 << 10
	s, err := js.Stream(context.Background(), worker.StreamEvents)
	if err != nil {
		t.Fatal(err)
	}
	cfg := s.CachedInfo().Config
	cfg.MaxMsgSize = streamMax
	if _, err := js.UpdateStream(context.Background(), cfg); err != nil {
		t.Fatal(err)
	}
	big := fmt.Appendf(nil, `{"commandId":"big","meetingRoomNumber":"m-big","groupName":"%s"}`, bytes.Repeat([]byte{1}, 200<<10))
	wt.Publish(t, js, "big", big)
	wt.Publish(t, js, "after", wt.Command("after", "m-after"))

	events, _ := wt.CollectTerminal(t, js, 3, 30*time.Second)
	if evs := events["after"]; len(evs) != 1 || evs[0].Subject != worker.SubjectCreated {
		t.Fatalf("the command after the large one: %d events", len(evs))
	}
	evs := events["big"]
	if len(evs) != 1 || evs[0].Subject != worker.SubjectFailed+".invalid_command" {
		t.Fatalf("big: %d events", len(evs))
	}
	if err := schemas.Validate(schemas.Failed, evs[0].Data); err != nil {
		t.Error(err)
	}
	var f struct {
		Command   json.RawMessage `json:"command"`
		Encoding  string          `json:"commandEncoding"`
		Truncated bool            `json:"commandTruncated"`
		SHA256    string          `json:"commandSha256"`
	}
	_ = json.Unmarshal(evs[0].Data, &f)
	sum := sha256.Sum256(big)
	kept := carried(t, f.Command, f.Encoding)
	t.Logf("big: event of %d bytes, %d bytes of the command kept", len(evs[0].Data), len(kept))
	if !f.Truncated || f.SHA256 != hex.EncodeToString(sum[:]) || !bytes.HasPrefix(big, kept) || len(evs[0].Data) > streamMax {
		t.Errorf("big: event of %d bytes, truncated %v, %d bytes kept", len(evs[0].Data), f.Truncated, len(kept))
	}
	if n := testutil.ToFloat64(w.Metrics().Redeliveries); n != 0 {
		t.Errorf("%v redeliveries", n)
	}
}
