package main

import (
	"fmt"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/xygroup/xygroup/worker"
	wt "github.com/xygroup/xygroup/worker/workertest"
	"github.com/xygroup/xygroup/xylink/sandbox"
)

// A worker process killed with SIGKILL mid-run and started again: every command
// ends in exactly one terminal event, and the sandbox saw no second successful
// create for any command. NATS and the sandbox live in the test process, so they
// outlive the worker.
func TestBinarySIGKILLMidRun(t *testing.T) {
	bin := buildBinary(t)
	srv := wt.StartNATS(t)
	sb := wt.StartSandbox(t, sandbox.Config{Rate: 1e6, Faults: sandbox.Faults{Latency: sandbox.Duration(150 * time.Millisecond)}})
	js := wt.JetStream(t, wt.Connect(t, srv))
	start := func() (*os.Process, *wt.SyncBuffer) {
		cmd, logs := startProcess(t, bin, []string{"XYLINK_TOKEN=" + wt.Token}, "worker", "--nats-url", srv.ClientURL(), "--xylink-base-url", sb.URL,
			"--enterprise-id", wt.Enterprise, "--http-addr", freeAddr(t), "--concurrency", "16", "--rate", "1000",
			"--xylink-timeout", "1s", "--ack-wait", "3s")
		return cmd.Process, logs
	}
	first, logs := start()
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("first worker:\n%s", logs.String())
		}
	})
	const n = 300
	wt.AwaitStream(t, js, worker.StreamCommands)
	for i := range n {
		id := fmt.Sprintf("kill-%03d", i)
		wt.Publish(t, js, id, wt.Command(id, "m-kill-"+id))
	}
	wt.Eventually(t, 60*time.Second, func() bool { return sb.Stats().Requests >= n/3 }, "a third of the calls made")
	if err := first.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_, _ = first.Wait()
	killedAt := sb.Stats()
	second, logs2 := start()
	defer func() { _ = second.Signal(syscall.SIGTERM) }()

	events := wt.AwaitTerminal(t, js, n, 2*time.Minute)
	reconciled := 0
	for id, evs := range events {
		if len(evs) != 1 || evs[0].Subject != worker.SubjectCreated {
			t.Errorf("%s: %d events, first on %s: %s", id, len(evs), evs[0].Subject, evs[0].Data)
		}
		if evs[0].Fields["reconciled"] == true {
			reconciled++
		}
	}
	if got := wt.TerminalCount(t, js); got != n {
		t.Fatalf("%d terminal events for %d commands", got, n)
	}
	st := sb.Stats()
	if len(st.DuplicateCreates) != 0 {
		t.Fatalf("created twice: %v", st.DuplicateCreates)
	}
	t.Logf("killed after %d calls (%d created); after the restart: %d calls in all, %d answers 66684, %d commands reconciled",
		killedAt.Requests, killedAt.ByAnswer["200"], st.Requests, st.ByAnswer["66684"], reconciled)
	_ = logs2
}
