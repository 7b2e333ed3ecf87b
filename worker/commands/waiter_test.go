package commands

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/xygroup/xygroup/worker"
	wt "github.com/xygroup/xygroup/worker/workertest"
	"github.com/xygroup/xygroup/xylink/sandbox"
)

// A command is awaited on its live event; published again, the commands stream
// drops it and no new event comes: the waiter finds the first one in the
// workers' records, byte for byte.
func TestWaiterLiveAndRepeatedCommand(t *testing.T) {
	srv := wt.StartNATS(t)
	sb := wt.StartSandbox(t, sandbox.Config{Rate: 1e6})
	wt.StartWorker(t, srv, wt.Client(t, sb))
	js := wt.JetStream(t, wt.Connect(t, srv))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	await := func(raw []byte) Event {
		t.Helper()
		w, err := NewWaiter(ctx, js, RecordLookup(js, wt.Enterprise))
		if err != nil {
			t.Fatal(err)
		}
		defer w.Close()
		w.every = 100 * time.Millisecond
		ref, err := Publish(ctx, js, raw, nil)
		if err != nil {
			t.Fatal(err)
		}
		var got []Event
		if err := w.Await(ctx, []Ref{ref}, func(e Event) { got = append(got, e) }); err != nil {
			t.Fatal(err)
		}
		if len(got) != 1 || got[0].CommandID != ref.CommandID || got[0].Subject != SubjectCreated || got[0].Failed {
			t.Fatalf("events %+v", got)
		}
		return got[0]
	}
	raw := wt.Command("wait-1", "m-wait")
	first := await(raw)
	msgs := func() uint64 {
		s, err := js.Stream(ctx, worker.StreamCommands)
		if err != nil {
			t.Fatal(err)
		}
		info, err := s.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return info.State.Msgs
	}
	before := msgs()
	again := await(raw)
	if after := msgs(); after != before {
		t.Fatalf("the repeated command was stored (%d → %d messages): the record was not what answered", before, after)
	}
	if !bytes.Equal(first.Data, again.Data) {
		t.Errorf("the repeated command's event differs:\n%s\n%s", first.Data, again.Data)
	}
}

// Events are matched on commandId, and on enterpriseId when the command names
// one; other events pass by.
func TestWaiterMatchesCommandAndEnterprise(t *testing.T) {
	srv := wt.StartNATS(t)
	nc := wt.Connect(t, srv)
	js := wt.JetStream(t, nc)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	w, err := NewWaiter(ctx, js, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	// published before Await: queued, not lost
	for _, ev := range []struct{ subject, data string }{
		{SubjectCreated, `{"commandId":"x","enterpriseId":"e2","n":1}`},
		{SubjectCreated, `{"commandId":"other","enterpriseId":"e1"}`},
		{SubjectCreated, `{"commandId":"x","enterpriseId":"e1","n":2}`},
		{SubjectFailed + ".rejected", `{"commandId":"y","enterpriseId":"e3"}`},
		{worker.SubjectWaiting, `{"commandId":"z","enterpriseId":"e1"}`},
		{SubjectFailed + ".invalid_command", `{"commandId":"z","enterpriseId":"e1"}`},
	} {
		if err := nc.Publish(ev.subject, []byte(ev.data)); err != nil {
			t.Fatal(err)
		}
	}
	refs := []Ref{
		refOf([]byte(`{"commandId":"x","enterpriseId":"e1"}`)),
		refOf([]byte(`{"commandId":"y"}`)),
		refOf([]byte(`{"commandId":"z","enterpriseId":7}`)), // not a string: matched on the commandId
	}
	var got []string
	if err := w.Await(ctx, refs, func(e Event) {
		got = append(got, e.CommandID+" "+e.Subject+" "+string(e.Data))
		if e.Failed != strings.HasPrefix(e.Subject, SubjectFailed+".") {
			t.Errorf("%s: Failed %v", e.Subject, e.Failed)
		}
	}); err != nil {
		t.Fatal(err)
	}
	want := []string{
		`x xylink.groups.created {"commandId":"x","enterpriseId":"e1","n":2}`,
		`y xylink.groups.failed.rejected {"commandId":"y","enterpriseId":"e3"}`,
		`z xylink.groups.failed.invalid_command {"commandId":"z","enterpriseId":"e1"}`,
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// fakeRecords answers lookups from a map that the test changes.
type fakeRecords struct {
	mu      sync.Mutex
	events  map[string]string // commandId → body
	calls   atomic.Int32
	asked   []Ref
	onAsked chan struct{}
}

func (f *fakeRecords) set(id, body string) { f.mu.Lock(); f.events[id] = body; f.mu.Unlock() }

func (f *fakeRecords) lookup(_ context.Context, enterpriseID, commandID string) (string, []byte, bool, error) {
	f.calls.Add(1)
	f.mu.Lock()
	f.asked = append(f.asked, Ref{EnterpriseID: enterpriseID, CommandID: commandID})
	body, ok := f.events[commandID]
	f.mu.Unlock()
	select {
	case f.onAsked <- struct{}{}:
	default:
	}
	if !ok {
		return "", nil, false, nil
	}
	return SubjectCreated, []byte(body), true, nil
}

func newFake() *fakeRecords {
	return &fakeRecords{events: map[string]string{}, onAsked: make(chan struct{}, 100)}
}

// Right after publishing, a command is looked up (it may have ended before); a
// record of another enterprise's command with the same commandId is not its.
func TestWaiterLooksUpRightAwayAndChecksTheEnterprise(t *testing.T) {
	srv := wt.StartNATS(t)
	js := wt.JetStream(t, wt.Connect(t, srv))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	f := newFake()
	f.set("done-before", `{"commandId":"done-before","enterpriseId":"e1"}`)
	f.set("same-id", `{"commandId":"same-id","enterpriseId":"e2"}`)
	w, err := NewWaiter(ctx, js, f.lookup)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	w.every = 200 * time.Millisecond
	start := time.Now()
	var got []string
	go func() {
		// the other enterprise's record stays; this one's comes later
		for f.calls.Load() < 4 {
			time.Sleep(10 * time.Millisecond)
		}
		f.set("same-id", `{"commandId":"same-id","enterpriseId":"e1"}`)
	}()
	err = w.Await(ctx, []Ref{{EnterpriseID: "e1", CommandID: "done-before"}, {EnterpriseID: "e1", CommandID: "same-id"}}, func(e Event) {
		got = append(got, string(e.Data))
	})
	if err != nil {
		t.Fatal(err)
	}
	want := `{"commandId":"done-before","enterpriseId":"e1"}` + "\n" + `{"commandId":"same-id","enterpriseId":"e1"}`
	if strings.Join(got, "\n") != want {
		t.Errorf("got\n%s", strings.Join(got, "\n"))
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.asked[0].EnterpriseID != "e1" {
		t.Errorf("looked up %+v", f.asked[0])
	}
	if time.Since(start) > 10*time.Second {
		t.Errorf("took %v", time.Since(start))
	}
}

// Events published while the connection is down are not received: after the
// reconnection the pending commands are looked up again.
func TestWaiterLooksUpAfterReconnecting(t *testing.T) {
	srv := wt.StartNATS(t)
	nc := wt.Connect(t, srv)
	js := wt.JetStream(t, nc)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	f := newFake()
	w, err := NewWaiter(ctx, js, f.lookup)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	w.every = time.Hour // only the first round and the reconnection
	done := make(chan error, 1)
	var got Event
	go func() { done <- w.Await(ctx, []Ref{{CommandID: "during-outage"}}, func(e Event) { got = e }) }()
	select {
	case <-f.onAsked: // the first round
	case <-ctx.Done():
		t.Fatal("not looked up after publishing")
	}
	f.set("during-outage", `{"commandId":"during-outage","enterpriseId":"e1"}`)
	select {
	case err := <-done:
		t.Fatalf("Await returned before the reconnection: %v", err)
	case <-time.After(300 * time.Millisecond):
	}
	if err := nc.ForceReconnect(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-ctx.Done():
		t.Fatal("not looked up after the reconnection")
	}
	if got.CommandID != "during-outage" || f.calls.Load() != 2 {
		t.Errorf("event %+v after %d lookups", got, f.calls.Load())
	}
}

// Await ends, with an error, at its deadline and when the connection closes.
func TestWaiterDeadlineAndClosedConnection(t *testing.T) {
	srv := wt.StartNATS(t)
	nc := wt.Connect(t, srv)
	js := wt.JetStream(t, nc)
	w, err := NewWaiter(context.Background(), js, newFake().lookup)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	err = w.Await(ctx, []Ref{{CommandID: "never"}}, func(Event) {})
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "1 command(s) without a terminal event yet") {
		t.Errorf("at the deadline: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- w.Await(context.Background(), []Ref{{CommandID: "never"}}, func(Event) {}) }()
	time.Sleep(100 * time.Millisecond)
	nc.Close()
	select {
	case err := <-done:
		if !errors.Is(err, nats.ErrConnectionClosed) {
			t.Errorf("connection closed: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Await did not end when the connection closed")
	}
}
