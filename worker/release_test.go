package worker_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/xygroup/xygroup/worker"
	wt "github.com/xygroup/xygroup/worker/workertest"
	"github.com/xygroup/xygroup/xylink/sandbox"
)

// Messages on a meeting's parked subject that are not commands (written there by
// hand, or by an older or broken writer): one that is not JSON and has none of
// the headers the worker writes when it parks, and one with those headers but a
// command that fails the schema. When the meeting starts and its parked commands
// are released, both end as failed.invalid_command, leave the parked stream, and
// the workers go on: the meeting's other commands end as usual and new commands
// are still taken.
func TestReleasedMeetingWithUndecodableParkedMessages(t *testing.T) {
	const meeting = "m-undecodable"
	srv := wt.StartNATS(t)
	sb := wt.StartSandbox(t, sandbox.Config{Rate: 1e6})
	c := wt.Client(t, sb)
	if _, err := sb.AddMeeting(sandbox.MeetingSpec{Number: meeting, StartsIn: sandbox.Duration(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	var workers []*wt.Running
	for range 2 {
		workers = append(workers, wt.StartWorker(t, srv, c, worker.WithConcurrency(8),
			worker.WithProbeBackoff(worker.Backoff{Initial: 100 * time.Millisecond, Max: 300 * time.Millisecond})))
	}
	js := wt.JetStream(t, wt.Connect(t, srv))
	const valid = 3
	for i := range valid {
		id := fmt.Sprintf("und-%d", i)
		wt.Publish(t, js, id, wt.Command(id, meeting))
	}
	parked := awaitParked(t, js, valid)

	// The meeting's parked subject, and a parked command's headers, as the worker wrote them.
	first, err := parked.GetMsg(context.Background(), 1)
	if err != nil {
		t.Fatal(err)
	}
	subject := first.Subject
	garbage := nats.NewMsg(subject)
	garbage.Data = []byte("\xff\xfe this is not a command")
	broken := nats.NewMsg(subject)
	broken.Data = []byte(`{"commandId":"und-broken","meetingRoomNumber":"` + meeting + `","mode":"sideways"}`)
	for k, v := range first.Header {
		broken.Header[k] = v
	}
	broken.Header.Set("Xygroup-Source-Seq", "999999")
	broken.Header.Set("Xygroup-Source-Msg-Id", "und-broken")
	broken.Header.Set(nats.MsgIdHdr, "test.und-broken")
	var garbageSeq uint64
	for i, m := range []*nats.Msg{garbage, broken} {
		ack, err := js.PublishMsg(context.Background(), m)
		if err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			garbageSeq = ack.Sequence
		}
	}

	sb.StartMeeting(meeting)
	garbageID := fmt.Sprintf("%s:%d", worker.StreamParked, garbageSeq)
	events := wt.AwaitTerminal(t, js, valid+2, time.Minute)
	for id, evs := range events {
		var terminal []wt.Event
		for _, e := range evs {
			if e.Terminal() {
				terminal = append(terminal, e)
			}
		}
		if len(terminal) != 1 {
			t.Errorf("%s: %d terminal events", id, len(terminal))
			continue
		}
		e := terminal[0]
		switch {
		case id == "und-broken" || id == garbageID:
			if e.Subject != worker.SubjectFailed+".invalid_command" {
				t.Errorf("%s ended on %s: %s", id, e.Subject, e.Data)
			}
		case strings.HasPrefix(id, "und-"):
			// One of them created the groups; the others meet them open.
			if e.Subject != worker.SubjectCreated && e.Subject != worker.SubjectFailed+".already_open" {
				t.Errorf("%s ended on %s: %s", id, e.Subject, e.Data)
			}
		default:
			t.Errorf("unexpected command %q ended on %s: %s", id, e.Subject, e.Data)
		}
	}
	if evs := events[garbageID]; len(evs) == 1 {
		var body struct {
			Command         string `json:"command"`
			CommandEncoding string `json:"commandEncoding"`
		}
		_ = json.Unmarshal(evs[0].Data, &body)
		if body.CommandEncoding != "base64" || body.Command == "" {
			t.Errorf("the undecodable message's event does not carry it: %s", evs[0].Data)
		}
	} else {
		t.Errorf("no event for the undecodable message (commandId %s); events of: %v", garbageID, keys(events))
	}
	if m, _ := sb.Meeting(meeting); m.Creates != 1 {
		t.Errorf("meeting created %d times", m.Creates)
	}
	awaitParked(t, js, 0)

	// Both workers still take commands.
	wt.Publish(t, js, "und-after", wt.Command("und-after", "m-undecodable-after"))
	if evs := wt.AwaitTerminal(t, js, valid+3, time.Minute)["und-after"]; len(evs) != 1 || evs[0].Subject != worker.SubjectCreated {
		t.Fatalf("a command after the release: %v", evs)
	}
	for i, w := range workers {
		if err := w.Stop(); err != nil {
			t.Errorf("worker %d: %v", i, err)
		}
	}
	if got := wt.TerminalCount(t, js); got != valid+3 {
		t.Fatalf("%d terminal events, want %d", got, valid+3)
	}
}

// awaitParked waits until the parked stream holds n messages and returns it.
func awaitParked(t *testing.T, js jetstream.JetStream, n uint64) jetstream.Stream {
	t.Helper()
	wt.AwaitStream(t, js, worker.StreamParked)
	s, err := js.Stream(context.Background(), worker.StreamParked)
	if err != nil {
		t.Fatal(err)
	}
	wt.Eventually(t, time.Minute, func() bool {
		info, err := s.Info(context.Background())
		return err == nil && info.State.Msgs == n
	}, fmt.Sprintf("%d messages in the parked stream", n))
	return s
}

func keys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}
