package worker_test

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/xygroup/xygroup/worker"
	"github.com/xygroup/xygroup/worker/record"
	wt "github.com/xygroup/xygroup/worker/workertest"
	"github.com/xygroup/xygroup/xylink/sandbox"
)

// A failed command of 200 KB costs its record a few hundred bytes, not the
// command again: the record keeps its terminal event without the command and
// the event's sequence in the events stream, where the event is whole. The
// same command published again gets the event first published.
func TestFailedCommandsRecordIsSmallAndNamesItsEvent(t *testing.T) {
	srv := wt.StartNATS(t)
	nc := wt.Connect(t, srv)
	js := wt.JetStream(t, nc)
	sb := wt.StartSandbox(t, sandbox.Config{Rate: 1e6})
	wt.StartWorker(t, srv, wt.Client(t, sb))
	ctx := context.Background()
	// Fails the schema: an unknown field of 200 KB.
	cmd := []byte(`{"commandId":"big-1","meetingRoomNumber":"910004217404","mode":"random","groupCount":2,"junk":"` + strings.Repeat("j", 200<<10) + `"}`)
	wt.Publish(t, js, "", cmd)
	ev := wt.AwaitTerminal(t, js, 1, 30*time.Second)["big-1"]
	if len(ev) != 1 || ev[0].Subject != worker.SubjectFailed+".invalid_command" {
		t.Fatalf("events: %+v", ev)
	}
	first := ev[0]

	kv, err := js.KeyValue(ctx, worker.BucketCommands)
	if err != nil {
		t.Fatal(err)
	}
	var e interface{ Value() []byte }
	wt.Eventually(t, 30*time.Second, func() bool {
		got, err := kv.Get(ctx, record.Key(wt.Enterprise, "big-1"))
		if err == nil && bytes.Contains(got.Value(), []byte(`"terminal"`)) {
			e = got
		}
		return e != nil
	}, "the terminal event recorded")
	t.Logf("record: %d bytes for a command of %d", len(e.Value()), len(cmd))
	if len(e.Value()) > 4<<10 {
		t.Errorf("record of %d bytes for a command of %d: it holds the command again", len(e.Value()), len(cmd))
	}
	var rec struct {
		EventSeq uint64 `json:"eventSeq"`
	}
	if err := json.Unmarshal(e.Value(), &rec); err != nil {
		t.Fatal(err)
	}
	s, err := js.Stream(ctx, worker.StreamEvents)
	if err != nil {
		t.Fatal(err)
	}
	if rec.EventSeq == 0 {
		t.Fatalf("the record does not name its event's sequence: %.300s", e.Value())
	}
	m, err := s.GetMsg(ctx, rec.EventSeq)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(m.Data, first.Data) {
		t.Fatalf("the event at eventSeq %d is another: %.200s", rec.EventSeq, m.Data)
	}
	st, err := worker.LookupCommand(ctx, js, wt.Enterprise, "big-1")
	if err != nil || st.EventSeq != rec.EventSeq || st.Terminal != first.Subject {
		t.Errorf("lookup: %+v %v", st, err)
	}
	detail, err := worker.InspectCommand(ctx, js, wt.Enterprise, "big-1")
	if err != nil || detail.EventSeq != rec.EventSeq {
		t.Errorf("inspect: eventSeq %d, %v", detail.EventSeq, err)
	}

	// Published again (past the stream's duplicate window: no Nats-Msg-Id),
	// it is answered with its event, whole, as first published.
	again := make(chan *nats.Msg, 4)
	sub, err := nc.ChanSubscribe(worker.SubjectFailed+".>", again)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	wt.Publish(t, js, "", cmd)
	select {
	case m := <-again:
		if !bytes.Equal(m.Data, first.Data) {
			t.Errorf("published again differently (%d bytes, first %d):\n%.300s", len(m.Data), len(first.Data), m.Data)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("no event for the command published again")
	}
}
