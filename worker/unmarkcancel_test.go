package worker_test

import (
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/xygroup/xygroup/worker"
	"github.com/xygroup/xygroup/worker/commands"
	wt "github.com/xygroup/xygroup/worker/workertest"
	"github.com/xygroup/xygroup/xylink"
	"github.com/xygroup/xygroup/xylink/sandbox"
)

// A grant whose window passes during a slow "sent" mark: the mark is taken
// back while a fresh grant is awaited. A cancel arriving then finds a command
// no request of which left: it is cancelled (not refused as in flight or
// already sent), the command ends failed.cancelled, once, and nothing reaches
// the API.
func TestCancelWhileAFreshGrantIsAwaitedAfterTheUnmark(t *testing.T) {
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
	nc1, err := nats.Connect(pipe.URL(), nats.Name("replica-1"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc1.Close)
	lim := &markSlowingLimiter{pipe: pipe, stuck: make(chan struct{}, 1)}
	wt.StartWorkerOn(t, nc1, c, worker.WithLimiter(lim), streams, lease, worker.WithConcurrency(1))
	js := wt.JetStream(t, wt.Connect(t, srv))
	wt.AwaitStream(t, js, worker.StreamCommands)
	wt.Publish(t, js, "cmd-A", namedCommand("cmd-A", "910000000061"))
	select {
	case <-lim.stuck:
	case <-time.After(30 * time.Second):
		t.Fatalf("the replica never waited for a fresh grant after a slow mark (%d waits)", lim.calls.Load())
	}
	since := time.Now()
	req := commands.CancelRequest{CommandID: "cmd-A", EnterpriseID: wt.Enterprise, Reason: "test"}
	out := awaitCancel(t, js, req, cancel(t, js, req), since.Add(-time.Minute))
	if out.Subject == worker.SubjectCancelRejected {
		t.Fatalf("cancel refused (%s) though no request of cmd-A left", out.Event.Reason)
	}
	events := wt.AwaitTerminal(t, js, 1, 60*time.Second)
	a := events["cmd-A"]
	for _, r := range proxy.requests() {
		if strings.HasPrefix(r, "cmd-A ") {
			t.Fatalf("cmd-A reached the API after it was cancelled: %v", proxy.requests())
		}
	}
	if len(a) != 1 || a[0].Subject != subjectCancelled {
		t.Fatalf("cmd-A's terminal events: %v", subjectsOf(a))
	}
}
