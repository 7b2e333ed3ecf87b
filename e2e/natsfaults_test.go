package e2e

import (
	"testing"
	"time"
)

// A single external nats-server killed (SIGKILL) mid-run and started again on
// the same store: the run completes, no worker exits.
func TestNATSServerRestart(t *testing.T) {
	knownFailure(t)
	h := New(t, Options{Nodes: 1, Workers: 3, Seed: 5})
	h.Publish(Commands("natsrestart", "", pick(300, 1500)))
	h.AwaitCreated(60, time.Minute)
	createdAt := h.APICreated()
	h.NATS.KillNode(0)
	down := time.Now()
	h.NATS.StartNode(0)
	h.NATS.AwaitJetStream(60 * time.Second)
	h.Note("server killed (SIGKILL) after %d created, JetStream back after %v", createdAt, time.Since(down).Round(100*time.Millisecond))
	h.Check(pick(3*time.Minute, 10*time.Minute))
}

// One node of a three-node cluster (the commands stream's leader) stopped and
// started again mid-run, streams at R3: every command ends once, every log
// line is JSON.
func TestClusterNodeRestart(t *testing.T) {
	knownFailure(t)
	h := New(t, Options{Nodes: 3, Workers: 3, Seed: 7})
	h.Publish(Commands("noderestart", "", pick(300, 1500)))
	h.AwaitCreated(60, time.Minute)
	leader := h.NATS.StreamLeader(h.JS, StreamCommands)
	if leader < 0 {
		leader = 0
	}
	createdAt := h.APICreated()
	h.NATS.StopNode(leader)
	stopped := time.Now()
	until(10*time.Second, 100*time.Millisecond, func() bool { return time.Since(stopped) >= 10*time.Second })
	h.NATS.StartNode(leader)
	h.Note("node %s (commands leader) stopped for %v after %d created; %d created while it was down", h.NATS.Nodes[leader].Name,
		time.Since(stopped).Round(100*time.Millisecond), createdAt, h.Events.CreatedBetween(stopped, time.Now()))
	h.Check(pick(3*time.Minute, 10*time.Minute))
}

// The node that leads the commands stream cut off from the other two (routes
// blackholed, its clients still connected to it) and rejoining, streams at R3,
// three workers: the workers on that node move to another, no duplicate
// create, every command ends once; created/s
// before, during and after the partition, and how long after the heal the
// last command was created. The other streams' and buckets' leaders are moved
// off that node first: with them on it too, nothing moves until nats-server
// has re-elected them all.
func TestClusterPartition(t *testing.T) {
	knownFailure(t)
	cut := pick(15*time.Second, 30*time.Second)
	h := New(t, Options{Nodes: 3, Workers: 3, Seed: 8})
	h.Publish(Commands("partition", "", pick(500, 2000)))
	h.AwaitCreated(40, time.Minute)
	// The cut-off node has workers connected to it (nats.go picks a server
	// at random): the commands stream's leadership is moved until it does.
	leader := -1
	until(20*time.Second, 200*time.Millisecond, func() bool {
		if leader = h.NATS.StreamLeader(h.JS, StreamCommands); leader >= 0 && len(h.WorkersOnNode(leader)) > 0 {
			return true
		}
		_, _ = h.NC.Request("$JS.API.STREAM.LEADER.STEPDOWN."+StreamCommands, nil, 2*time.Second)
		return false
	})
	if leader < 0 {
		t.Fatal("no leader for the commands stream")
	}
	// Only the commands stream (and the consumer) lose their leader: the
	// other streams' leaders are moved off that node first.
	if stuck := h.NATS.MoveLeadersOff(h.NC, h.JS, leader, 20*time.Second, StreamEvents, "XYGROUP_PARKED", "KV_xygroup-commands",
		"KV_xygroup-meetings", "KV_xygroup-breakers", "KV_xygroup-limiter", "KV_xygroup-replicas"); len(stuck) > 0 {
		h.Note("still led by the node to cut off: %v", stuck)
	}
	before := time.Now()
	createdBefore := h.Events.CreatedBetween(h.Started, before)
	apiBefore := h.APICreated()
	h.Note("isolating %s, the commands stream's leader, at %s after %d created; workers connected to it: %v",
		h.NATS.Nodes[leader].Name, before.UTC().Format("15:04:05.000"), createdBefore, h.WorkersOnNode(leader))
	h.NATS.Isolate(leader)
	// The two nodes left form a majority: the replicas on their side keep
	// going once JetStream has elected leaders there, which takes seconds on
	// an idle machine and longer on a loaded one. The cut lasts at least cut,
	// and until that side has created a quarter of cut's worth at the rate
	// (at the sandbox, which the harness reaches whichever node it is on); a
	// stalled cluster creates nothing in the two minutes allowed.
	// The workers on the cut-off node move to another (they find their
	// JetStream writes failing there while another node takes them).
	least := int(0.25 * h.Opts.Rate * cut.Seconds())
	progressed := until(2*time.Minute, 100*time.Millisecond, func() bool {
		return time.Since(before) >= cut && h.APICreated()-apiBefore >= least && len(h.WorkersOnNode(leader)) == 0
	})
	apiDuring := h.APICreated() - apiBefore
	left := h.WorkersOnNode(leader)
	h.NATS.Rejoin(leader)
	healed := time.Now()
	h.Note("healed at %s", healed.UTC().Format("15:04:05.000"))
	h.Events.AwaitEnded(IDs(h.Commands), pick(4*time.Minute, 10*time.Minute))
	var last time.Time
	for _, e := range h.Events.Events() {
		if e.Subject == SubjectCreated && e.Stored.After(last) {
			last = e.Stored
		}
	}
	during := h.Events.CreatedBetween(before, healed)
	after := h.Events.CreatedBetween(healed, healed.Add(time.Hour))
	total := h.Events.CreatedBetween(h.Started, h.Started.Add(time.Hour))
	h.Note("partition of %s for %v: %.1f created/s before (%d), %.1f created/s during (%d), %d created after the heal, the last %v after it; %.1f created/s overall (%d in %v)",
		h.NATS.Nodes[leader].Name, healed.Sub(before).Round(100*time.Millisecond), rate(createdBefore, before.Sub(h.Started)), createdBefore,
		rate(during, healed.Sub(before)), during, after, last.Sub(healed).Round(100*time.Millisecond),
		rate(total, last.Sub(h.Started)), total, last.Sub(h.Started).Round(100*time.Millisecond))
	h.Check(pick(4*time.Minute, 10*time.Minute))
	if len(left) > 0 {
		t.Errorf("workers %v still connected to the cut-off node %s after %v", left, h.NATS.Nodes[leader].Name,
			healed.Sub(before).Round(100*time.Millisecond))
	}
	if !progressed && apiDuring < least {
		t.Errorf("%d created at the API during the %v cut, want at least %d: the majority side stalled", apiDuring,
			healed.Sub(before).Round(100*time.Millisecond), least)
	}
}

func rate(n int, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(n) / d.Seconds()
}
