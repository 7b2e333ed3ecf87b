package worker_test

import (
	"context"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/xygroup/xygroup/worker"
	"github.com/xygroup/xygroup/worker/ratelimit"
	wt "github.com/xygroup/xygroup/worker/workertest"
	"github.com/xygroup/xygroup/xylink/sandbox"
)

// delayRelay is a TCP relay to a NATS server that adds a constant latency
// in each direction (bytes keep their order; throughput is not limited): a
// replica that runs farther from NATS than the others (another zone).
type delayRelay struct {
	ln    net.Listener
	delay time.Duration
	mu    sync.Mutex
	conns []net.Conn
}

func startDelayRelay(t *testing.T, target string, oneWay time.Duration) *delayRelay {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &delayRelay{ln: ln, delay: oneWay}
	t.Cleanup(r.close)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			r.mu.Lock()
			r.conns = append(r.conns, c, s)
			r.mu.Unlock()
			go r.pump(c, s)
			go r.pump(s, c)
		}
	}()
	return r
}

type delayedChunk struct {
	data []byte
	due  time.Time
}

func (r *delayRelay) pump(src, dst net.Conn) {
	ch := make(chan delayedChunk, 1<<16)
	go func() {
		defer dst.Close()
		for c := range ch {
			if d := time.Until(c.due); d > 0 {
				time.Sleep(d)
			}
			if _, err := dst.Write(c.data); err != nil {
				return
			}
		}
	}()
	buf := make([]byte, 64<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			ch <- delayedChunk{data: append([]byte(nil), buf[:n]...), due: time.Now().Add(r.delay)}
		}
		if err != nil {
			close(ch)
			return
		}
	}
}

func (r *delayRelay) url() string { return "nats://" + r.ln.Addr().String() }

func (r *delayRelay) close() {
	r.ln.Close()
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, c := range r.conns {
		c.Close()
	}
}

// One replica 10 ms from NATS each way, another next to it: the far one gets
// a grant 10 ms late and takes 20 ms for its "sent" mark, so its calls leave
// about 30 ms after their grants, the near one's about 1 ms after. The
// dispenser's guard absorbs 23 ms of such difference; the far replica's
// requests say their lead, and the dispenser spaces departures, not grants:
// no second at the API holds more than 20, and no 429.
func TestReplicaFartherFromNATSKeepsTheRate(t *testing.T) {
	srv := wt.StartNATS(t)
	sb := wt.StartSandbox(t, sandbox.Config{Rate: 20})
	c := wt.Client(t, sb)

	// The dispenser: next to NATS, elected before the workers start.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	disp, err := ratelimit.NewCluster(ctx, wt.Connect(t, srv), ratelimit.Options{Name: "dispenser"})
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); !disp.Stats().Dispensing; {
		if time.Now().After(deadline) {
			t.Fatal("no dispenser")
		}
		time.Sleep(10 * time.Millisecond) // the election: no event to await
	}

	relay := startDelayRelay(t, strings.TrimPrefix(srv.ClientURL(), "nats://"), 10*time.Millisecond)
	far, err := nats.Connect(relay.url(), nats.Name("far-replica"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(far.Close)
	wt.StartWorkerOn(t, far, c, worker.WithRate(20, nil), worker.WithConcurrency(8))
	wt.StartWorker(t, srv, c, worker.WithRate(20, nil), worker.WithConcurrency(8))

	js := wt.JetStream(t, wt.Connect(t, srv))
	wt.AwaitStream(t, js, worker.StreamCommands)
	const n = 300
	for i := range n {
		id := fmt.Sprintf("far-%03d", i)
		wt.Publish(t, js, id, wt.Command(id, "m-"+id))
	}
	wt.AwaitTerminal(t, js, n, 3*time.Minute)
	st := sb.Stats()
	e := st.Enterprises[wt.Enterprise]
	t.Logf("%d requests: max %d in a sliding second (limit 20); answers %v", e.Requests, e.MaxInWindow, st.ByAnswer)
	if e.MaxInWindow > 20 || st.ByAnswer["429"] > 0 {
		t.Fatalf("the limit broke: %d requests in one sliding second, %d answered 429", e.MaxInWindow, st.ByAnswer["429"])
	}
}
