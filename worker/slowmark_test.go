package worker_test

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/xygroup/xygroup/worker"
	"github.com/xygroup/xygroup/worker/ratelimit"
	wt "github.com/xygroup/xygroup/worker/workertest"
	"github.com/xygroup/xygroup/xylink"
	"github.com/xygroup/xygroup/xylink/sandbox"
)

// markSlowingLimiter grants its first wait at once and slows NATS right
// after it, so that the request's "sent" mark takes longer than a grant may
// wait: the request must take a fresh grant. The second wait fails (failSecond:
// no grant in time) or never ends; a wait that never ends is reported on
// stuck.
type markSlowingLimiter struct {
	pipe       *wt.Relay
	failSecond bool
	calls      atomic.Int32
	stuck      chan struct{}
}

func (l *markSlowingLimiter) Wait(ctx context.Context, _ string, _ worker.Priority, opts ...worker.WaitOption) error {
	n := l.calls.Add(1)
	switch {
	case n == 1:
		l.pipe.SetLatency(80*time.Millisecond, 0)
		if d := ratelimit.DepartureFor(opts); d != nil { // a window of 25 ms
			now := time.Now()
			*d = ratelimit.Departure{From: now, By: now.Add(25 * time.Millisecond)}
		}
		return nil
	case n == 2:
		l.pipe.SetLatency(0, 0)
		if l.failSecond {
			return errors.New("no grant")
		}
	}
	select {
	case l.stuck <- struct{}{}:
	default:
	}
	<-ctx.Done()
	return ctx.Err()
}
func (l *markSlowingLimiter) Throttled(string) {}

// slowMarkThenDeath: command A's first grant is followed by a slow "sent"
// mark, then its replica dies while waiting for a grant, never having sent A.
// Command B of the same meeting creates its groups meanwhile, so A's only
// request, by another replica, is answered 66684: A must end
// failed.already_open, not be reconciled as created.
func slowMarkThenDeath(t *testing.T, failSecond bool) {
	srv := wt.StartNATS(t)
	sb := wt.StartSandbox(t, sandbox.Config{Rate: 1e6})
	var proxy groupNameProxy
	base := proxy.start(t, sb.URL)
	c, err := xylink.NewClient(base, xylink.WithTenants(xylink.Credentials{EnterpriseID: wt.Enterprise, Token: wt.Token}))
	if err != nil {
		t.Fatal(err)
	}
	streams := worker.WithStreams(worker.StreamSettings{AckWait: 2 * time.Second})
	lease := worker.WithCallLease(3 * time.Second)

	pipe := wt.StartRelay(t, srv)
	nc1, err := nats.Connect(pipe.URL(), nats.Name("replica-1"), nats.NoReconnect())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc1.Close)
	lim := &markSlowingLimiter{pipe: pipe, failSecond: failSecond, stuck: make(chan struct{}, 1)}
	wt.StartWorkerOn(t, nc1, c, worker.WithLimiter(lim), streams, lease, worker.WithConcurrency(1))
	js := wt.JetStream(t, wt.Connect(t, srv))
	wt.AwaitStream(t, js, worker.StreamCommands)
	wt.Publish(t, js, "cmd-A", namedCommand("cmd-A", "910000000051"))
	select {
	case <-lim.stuck:
	case <-time.After(30 * time.Second):
		t.Fatalf("replica 1 never waited for a grant after a slow mark (%d waits)", lim.calls.Load())
	}
	// It dies.
	nc1.Close()
	pipe.Close()

	wt.Publish(t, js, "cmd-B", namedCommand("cmd-B", "910000000051"))
	wt.StartWorker(t, srv, c, streams, lease)
	events := wt.AwaitTerminal(t, js, 2, 90*time.Second)
	sentA := 0
	for _, r := range proxy.requests() {
		if strings.HasPrefix(r, "cmd-A ") {
			sentA++
		}
	}
	a := events["cmd-A"]
	t.Logf("API requests in arrival order: %v; cmd-A: %s %s", proxy.requests(), a[0].Subject, a[0].Data)
	if sentA == 1 && a[0].Subject == worker.SubjectCreated {
		t.Fatalf("cmd-A reconciled as created though its only request was answered 66684: replica 1 never sent it")
	}
}

// The replica dies while it waits for the fresh grant its slow mark asked
// for: the request never left, yet the record says it may have.
func TestDeathWhileWaitingForAFreshGrantIsNotReconciled(t *testing.T) {
	slowMarkThenDeath(t, false)
}

// The fresh grant does not come in time: the call is given back (not sent),
// and the command's next call dies while waiting for its grant. Neither sent
// anything.
func TestCallGivenBackAfterASlowMarkIsNotReconciled(t *testing.T) {
	slowMarkThenDeath(t, true)
}
