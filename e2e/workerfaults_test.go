package e2e

import (
	"syscall"
	"testing"
	"time"
)

// A worker killed with SIGKILL mid-run and started again: one terminal event
// per command, no meeting created twice.
func TestWorkerKilledMidRun(t *testing.T) {
	knownFailure(t)
	h := New(t, Options{Nodes: 1, Workers: 3, Seed: 9, WorkerEnv: map[string]string{"XYGROUP_ACK_WAIT": "10s"}})
	h.Proxy.SetFaults(Faults{OutLatency: 100 * time.Millisecond})
	h.Publish(Commands("kill9", "", pick(300, 1500)))
	h.AwaitCreated(50, time.Minute)
	h.ResendsExpected("a worker killed after a 200 reached it and before it recorded the answer")
	w := h.Workers[0]
	w.Signal(syscall.SIGKILL)
	w.Wait(10 * time.Second)
	killedAt := h.APICreated()
	w.Restart(t)
	h.Note("worker 0 killed (SIGKILL) after %d created, started again", killedAt)
	h.Check(pick(3*time.Minute, 10*time.Minute))
}

// A worker cut off from NATS (its connection blackholed) while it still
// reaches the API, then reconnected: no meeting created twice, every command
// ends once.
func TestWorkerCutOffFromNATS(t *testing.T) {
	knownFailure(t)
	cut := pick(15*time.Second, 30*time.Second)
	h := New(t, Options{Nodes: 1, Workers: 3, Seed: 10, NATSProxy: true, WorkerEnv: map[string]string{"XYGROUP_ACK_WAIT": "10s"}})
	h.Proxy.SetFaults(Faults{OutLatency: 100 * time.Millisecond})
	h.Publish(Commands("cutoff", "", pick(300, 1500)))
	h.AwaitCreated(50, time.Minute)
	h.ResendsExpected("a worker that received a 200 cannot record it while cut off from NATS; its command returns after AckWait")
	w := h.Workers[0]
	w.NATSProxy.Blackhole()
	from := time.Now()
	until(cut+time.Second, 100*time.Millisecond, func() bool { return time.Since(from) >= cut })
	w.NATSProxy.Heal()
	h.Note("worker 0's NATS connection blackholed for %v; %d created during the cut", cut, h.Events.CreatedBetween(from, time.Now()))
	h.Check(pick(3*time.Minute, 10*time.Minute))
}

// The whole three-node cluster stopped and started again mid-run: every
// command ends once.
func TestWholeClusterRestart(t *testing.T) {
	knownFailure(t)
	h := New(t, Options{Nodes: 3, Workers: 3, Seed: 11})
	h.Publish(Commands("clusterrestart", "", pick(300, 1500)))
	h.AwaitCreated(60, time.Minute)
	createdAt := h.APICreated()
	for i := range h.NATS.Nodes {
		h.NATS.StopNode(i)
	}
	down := time.Now()
	for i := range h.NATS.Nodes {
		h.NATS.StartNode(i)
	}
	h.NATS.AwaitJetStream(90 * time.Second)
	h.Note("cluster stopped after %d created, JetStream back after %v", createdAt, time.Since(down).Round(100*time.Millisecond))
	h.Check(pick(4*time.Minute, 10*time.Minute))
}
