package worker_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/xygroup/xygroup/worker"
	"github.com/xygroup/xygroup/worker/contract"
	"github.com/xygroup/xygroup/worker/embedded"
	wt "github.com/xygroup/xygroup/worker/workertest"
	"github.com/xygroup/xygroup/xylink"
	"github.com/xygroup/xygroup/xylink/sandbox"
)

// BenchmarkPipeline measures the worker's own cost: the limiter set very high, the
// sandbox without latency. It compares, in the same run and on the same server
// and sandbox, the worker against a bare nats.go loop (consume → the same signed
// HTTP call → publish → ack) with the same concurrency. Reported per variant:
// commands/s with a backlog, the messages the NATS server received per
// command, and the latency of one command at a time
// (publish → its event seen by a subscriber), p50 and p99.
//
//	go test -run '^$' -bench Pipeline -benchtime 2000x ./worker/
func BenchmarkPipeline(b *testing.B) {
	for _, variant := range []string{"bare", "xygroup"} {
		b.Run(variant, func(b *testing.B) {
			srv := wt.StartNATS(b)
			sb := wt.StartSandbox(b, sandbox.Config{Rate: 1e9})
			c := wt.Client(b, sb)
			js := wt.JetStream(b, wt.Connect(b, srv))
			if variant == "xygroup" {
				wt.StartWorker(b, srv, c, worker.WithConcurrency(32), worker.WithRate(1e9, nil))
			} else {
				startBareLoop(b, srv, c, 32)
			}
			seen := subscribeEvents(b, srv)
			// warm up, and wait for the streams
			oneCommand(b, js, seen, "warm-"+variant)

			inMsgs := func() int64 {
				v, err := srv.Varz(nil)
				if err != nil {
					b.Fatal(err)
				}
				return v.InMsgs
			}
			b.ResetTimer()
			msgs0 := inMsgs()
			start := time.Now()
			ids := make([]string, b.N)
			for i := range b.N {
				ids[i] = fmt.Sprintf("%s-%d-%d", variant, b.N, i)
				publishAsync(b, js, ids[i])
			}
			seen.await(b, ids, 5*time.Minute)
			elapsed := time.Since(start)
			b.StopTimer()
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "cmds/s")
			// Messages the server received per command: from the publisher,
			// the worker and the dispenser (requests, writes, acks).
			b.ReportMetric(float64(inMsgs()-msgs0)/float64(b.N), "nats-msgs/cmd")

			lat := make([]time.Duration, 0, 200)
			for i := range 200 {
				lat = append(lat, oneCommand(b, js, seen, fmt.Sprintf("%s-lat-%d-%d", variant, b.N, i)))
			}
			slices.Sort(lat)
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
			b.ReportMetric(0, "ns/op")
		})
	}
}

func publishAsync(b *testing.B, js jetstream.JetStream, id string) { publishTo(b, js, id, "m-"+id) }

func publishTo(b *testing.B, js jetstream.JetStream, id, meeting string) {
	m := nats.NewMsg(worker.SubjectCreate)
	m.Data = wt.Command(id, meeting)
	m.Header.Set(nats.MsgIdHdr, id)
	if _, err := js.PublishMsgAsync(m); err != nil {
		b.Fatal(err)
	}
}

// oneCommand publishes one command and returns how long until its event was seen.
func oneCommand(b *testing.B, js jetstream.JetStream, seen *eventLog, id string) time.Duration {
	start := time.Now()
	wt.Publish(b, js, id, wt.Command(id, "m-"+id))
	seen.await(b, []string{id}, time.Minute)
	return seen.at(id).Sub(start)
}

// eventLog records when each command's event was seen by a core subscriber.
type eventLog struct {
	mu   sync.Mutex
	cond *sync.Cond
	seen map[string]time.Time
}

func subscribeEvents(b *testing.B, srv *embedded.Server) *eventLog {
	l := &eventLog{seen: map[string]time.Time{}}
	l.cond = sync.NewCond(&l.mu)
	nc := wt.Connect(b, srv)
	record := func(m *nats.Msg) {
		now := time.Now()
		id := contract.IdentityOf(m.Data).CommandID
		l.mu.Lock()
		l.seen[id] = now
		l.cond.Broadcast()
		l.mu.Unlock()
	}
	// Not xylink.groups.>: a subscriber on the command subject would hide "no
	// responders" from publishers before the stream exists.
	for _, subj := range []string{worker.SubjectCreated, worker.SubjectFailed + ".>"} {
		if _, err := nc.Subscribe(subj, record); err != nil {
			b.Fatal(err)
		}
	}
	_ = nc.Flush()
	return l
}

func (l *eventLog) await(b *testing.B, ids []string, within time.Duration) {
	timer := time.AfterFunc(within, func() { l.mu.Lock(); l.cond.Broadcast(); l.mu.Unlock() })
	defer timer.Stop()
	deadline := time.Now().Add(within)
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, id := range ids {
		for l.seen[id].IsZero() {
			if time.Now().After(deadline) {
				b.Fatalf("no event for %s within %v", id, within)
			}
			l.cond.Wait()
		}
	}
}

func (l *eventLog) at(id string) time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.seen[id]
}

// startBareLoop is the baseline: no schema, limiter, breaker, classification or
// event envelope; the same consumer settings, call and publish-then-ack.
func startBareLoop(b *testing.B, srv *embedded.Server, c *xylink.Client, concurrency int) {
	nc := wt.Connect(b, srv)
	js := wt.JetStream(b, nc)
	ctx, cancel := context.WithCancel(context.Background())
	b.Cleanup(cancel)
	s := worker.StreamSettings{}
	for _, cfg := range []jetstream.StreamConfig{s.CommandsStream(), s.EventsStream()} {
		if _, err := js.CreateStream(ctx, cfg); err != nil {
			b.Fatal(err)
		}
	}
	cons, err := js.CreateConsumer(ctx, worker.StreamCommands, s.WorkersConsumer())
	if err != nil {
		b.Fatal(err)
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(concurrency))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(it.Stop)
	for range concurrency {
		go func() {
			for {
				msg, err := it.Next()
				if err != nil {
					return
				}
				var cmd worker.Command
				_ = json.Unmarshal(msg.Data(), &cmd)
				groups, _ := c.CreateGroups(ctx, wt.Enterprise, &cmd.CreateGroupsRequest)
				body, _ := json.Marshal(map[string]any{"commandId": cmd.CommandID, "groups": groups})
				if _, err := js.Publish(ctx, worker.SubjectCreated, body); err != nil {
					return
				}
				_ = msg.DoubleAck(ctx)
			}
		}()
	}
}
