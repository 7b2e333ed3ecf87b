package worker_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/xygroup/xygroup/worker"
	wt "github.com/xygroup/xygroup/worker/workertest"
	"github.com/xygroup/xygroup/xylink"
	"github.com/xygroup/xygroup/xylink/sandbox"
)

// A replica that stops while a command is on its way to it gives it back
// unread (Worker.pull naks what arrives while stopping); the next replica
// reads it at its second delivery. The horizon must still refuse a command
// far ahead that no replica ever accepted, not park it for ten years.
func TestHorizonRefusesFarAheadGivenBackUnread(t *testing.T) {
	srv := wt.StartNATS(t)
	sb := wt.StartSandbox(t, sandbox.Config{Rate: 1e6})
	c := wt.Client(t, sb)
	first := wt.StartWorker(t, srv, c, worker.WithMaxHorizon(time.Hour))
	js := wt.JetStream(t, wt.Connect(t, srv))
	wt.AwaitStream(t, js, worker.StreamCommands)
	wt.Eventually(t, 30*time.Second, func() bool {
		_, err := js.Consumer(context.Background(), worker.StreamCommands, worker.ConsumerWorkers)
		return err == nil
	}, "the workers' consumer")
	if err := first.Stop(); err != nil {
		t.Fatal(err)
	}

	far := time.Now().Add(10 * 365 * 24 * time.Hour)
	wt.Publish(t, js, "far-given-back", wt.Command("far-given-back", "m-far", "notBefore", at(far)))
	// What a stopping replica does with a delivery it has not read.
	cons, err := js.Consumer(context.Background(), worker.StreamCommands, worker.ConsumerWorkers)
	if err != nil {
		t.Fatal(err)
	}
	batch, err := cons.Fetch(1, jetstream.FetchMaxWait(10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	got := 0
	for msg := range batch.Messages() {
		got++
		if err := msg.Nak(); err != nil {
			t.Fatal(err)
		}
	}
	if got != 1 {
		t.Fatalf("fetched %d deliveries, want 1", got)
	}

	wt.StartWorker(t, srv, c, worker.WithMaxHorizon(time.Hour))
	wt.Eventually(t, time.Minute, func() bool {
		return wt.TerminalCount(t, js) > 0 || parkedMsgs(t, js) > 0
	}, "the command refused or parked")
	if n := parkedMsgs(t, js); n != 0 {
		t.Fatalf("a command ten years ahead, never accepted, is parked (%d parked copies): the horizon was skipped at its second delivery", n)
	}
	evs := wt.AwaitTerminal(t, js, 1, time.Minute)
	if es := evs["far-given-back"]; len(es) != 1 || es[0].Subject != "xylink.groups.failed.invalid_command" {
		t.Fatalf("events %v, want one failed (invalid_command)", es)
	}
}

// A command that would wait while the meetings bucket is full is refused
// over_quota (notParked): its copy was stored in the parked stream before its
// meeting's record failed. The copy must not stay there with no record to let
// it out, holding the stream's bytes and its tenant's share for a command
// that already ended.
func TestFullMeetingsBucketAtParkLeavesNoCopy(t *testing.T) {
	srv := wt.StartNATS(t)
	sb := wt.StartSandbox(t, sandbox.Config{Rate: 1e6})
	wt.StartWorker(t, srv, wt.Client(t, sb), worker.WithStreams(worker.StreamSettings{MeetingsMaxBytes: 64 << 10}))
	js := wt.JetStream(t, wt.Connect(t, srv))
	wt.AwaitStream(t, js, "KV_"+worker.BucketMeetings)
	wt.AwaitStream(t, js, worker.StreamParked)
	kv, err := js.KeyValue(context.Background(), worker.BucketMeetings)
	if err != nil {
		t.Fatal(err)
	}
	fillers := fillBucket(t, kv, "filler", 1<<10)
	fillers = append(fillers, fillBucket(t, kv, "small", 16)...)

	soon := time.Now().Add(5 * time.Second)
	wt.Publish(t, js, "mfull", wt.Command("mfull", "m-mfull", "notBefore", at(soon)))
	wt.Eventually(t, time.Minute, func() bool {
		return wt.TerminalCount(t, js) > 0
	}, "the command refused while the meetings bucket is full")
	evs := wt.AwaitTerminal(t, js, 1, time.Minute)
	es := evs["mfull"]
	if len(es) == 0 || !strings.HasPrefix(es[len(es)-1].Subject, "xylink.groups.failed") {
		t.Fatalf("events %v: want the command refused (this test is about a refusal)", es)
	}
	purgeKeys(t, js, worker.BucketMeetings, fillers)
	// Whatever lets out or cleans up parked copies has a minute; a copy of a
	// command that has ended must not stay.
	wt.Eventually(t, time.Minute, func() bool { return parkedMsgs(t, js) == 0 },
		"no copy left in the parked stream of a command refused over_quota while the meetings bucket was full")
}

// A crowded tenant's commands go to its lane; while the meetings bucket is
// full the lane's record cannot be opened (openLane), so the move fails as a
// full store. The command must then go straight (as while the parked stream
// is full), not be given back and sent to the lane again: a loop of a publish
// and a record write per delivery for as long as the bucket is full.
func TestFullMeetingsBucketLaneMoveIsNoRetryLoop(t *testing.T) {
	srv := wt.StartNATS(t)
	sb := wt.StartSandbox(t, sandbox.Config{Rate: 1000, Enterprises: []sandbox.Enterprise{{ID: "small", Token: "small-token", Rate: 1000}}})
	c := wt.Client(t, sb, xylink.Credentials{EnterpriseID: "small", Token: "small-token"})
	js := wt.JetStream(t, wt.Connect(t, srv))
	wt.StartWorker(t, srv, c, worker.WithConcurrency(8), worker.WithRate(20, map[string]float64{"small": 1}),
		worker.WithStreams(worker.StreamSettings{MeetingsMaxBytes: 64 << 10}))
	wt.AwaitStream(t, js, worker.StreamCommands)
	wt.AwaitStream(t, js, "KV_"+worker.BucketMeetings)
	kv, err := js.KeyValue(context.Background(), worker.BucketMeetings)
	if err != nil {
		t.Fatal(err)
	}
	fillBucket(t, kv, "filler", 1<<10)
	fillBucket(t, kv, "small", 16)
	const n = 12
	for i := range n {
		id := fmt.Sprintf("crowd-%03d", i)
		wt.Publish(t, js, id, wt.Command(id, "m-"+id, "enterpriseId", `"small"`))
	}
	cons, err := js.Consumer(context.Background(), worker.StreamCommands, worker.ConsumerWorkers)
	if err != nil {
		t.Fatal(err)
	}
	deliveries := func() uint64 {
		info, err := cons.Info(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		return info.Delivered.Consumer
	}
	// The tenant's pace is a command a second: its commands take about n
	// seconds whatever happens to its lane.
	wt.Eventually(t, 2*time.Minute, func() bool { return wt.TerminalCount(t, js) >= n/2 || deliveries() > 50*n },
		"half the crowded tenant's commands ended, or a retry loop")
	if d := deliveries(); d > 50*n {
		t.Fatalf("%d deliveries of %d commands while the meetings bucket is full: a retry loop (a lane move refused for lack of room is given back at once, again and again)", d, n)
	}
}
