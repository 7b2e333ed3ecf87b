package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/xygroup/xygroup/xylink/sandbox"
)

// The explorer's runner: it carries a schedule out against a harness and
// records the history the checker reads.

// pubRecord is one publish of a command.
type pubRecord struct {
	Cmd       exploreCmd
	At        time.Time // before the publish
	Body      []byte
	Seq       uint64
	Duplicate bool
	Err       error // refused (never stored)
}

// cancelRecord is one cancel.
type cancelRecord struct {
	ID         string
	CommandID  string
	Meeting    string
	Enterprise string
	At         time.Time
	Seq        uint64
	Err        error
}

// replayRecord is one `xygroup replay`.
type replayRecord struct {
	ID             string
	Class          string
	Start, End     time.Time
	Code           int
	Stdout, Stderr string
	Summary        *replaySummary
}

type replaySummary struct {
	Selected   int            `json:"selected"`
	Published  int            `json:"published"`
	Created    int            `json:"created"`
	Failed     map[string]int `json:"failedAgain"`
	Pending    int            `json:"pending"`
	PendingIDs []string       `json:"pendingIds"`
}

// faultRecord is one nemesis operation as it was carried out.
type faultRecord struct {
	Kind       opKind
	What       string
	From, Till time.Time
}

// history is what a run recorded.
type history struct {
	mu       sync.Mutex
	Start    time.Time
	Pubs     []pubRecord
	Cancels  []cancelRecord
	Replays  []replayRecord
	Faults   []faultRecord
	Problems []string // what the runner itself could not do
}

func (hs *history) add(f func()) {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	f()
}

// explorer runs one schedule.
type explorer struct {
	t     *testing.T
	h     *Harness
	s     *exploreSchedule
	hist  *history
	wg    sync.WaitGroup
	mu    sync.Mutex // worker restarts and stops
	nodes sync.Mutex // NATS node faults, one at a time
}

func exploreOptions(s *exploreSchedule) Options {
	return Options{Nodes: s.Nodes, Workers: s.Workers, V2: s.V2, Tenants: exploreTenants, Seed: s.Seed,
		WorkerEnv: map[string]string{
			"XYGROUP_MAX_WAIT":           exploreMaxWait.String(),
			"XYGROUP_PROBE_MAX_INTERVAL": exploreProbeInterval.String(),
			"XYGROUP_ACK_WAIT":           exploreAckWait.String(),
			"XYGROUP_DRAIN_TIMEOUT":      "5s",
			"XYGROUP_BREAKER_OPEN_FOR":   "3s",
			"XYLINK_TIMEOUT":             exploreAPITimeout.String(),
		}}
}

// run carries the schedule out and waits until every command and replay ended
// (or stalled), with every fault undone.
func (x *explorer) run() {
	h, s := x.h, x.s
	if s.SmallStream {
		x.shrinkCommandsStream()
	}
	for _, m := range s.Meetings {
		spec := sandbox.MeetingSpec{Number: m.Number, StartsIn: sandbox.Duration(m.StartsIn)}
		if m.Never {
			spec.StartsIn = sandbox.Duration(time.Hour)
		}
		if m.StartsIn == 0 && !m.Never {
			spec.StartsIn = 0
		}
		if _, err := h.Sandbox.AddMeeting(spec); err != nil {
			x.t.Fatal(err)
		}
	}
	x.hist.Start = time.Now()
	h.Started = x.hist.Start
	for i, o := range s.Ops {
		if d := time.Until(x.hist.Start.Add(o.At)); d > 0 {
			time.Sleep(d) // the schedule's own pace
		}
		x.wg.Go(func() { x.do(i, o) })
	}
	x.wg.Wait()
	// Every fault is undone by now; make sure every worker runs.
	h.Proxy.SetFaults(Faults{})
	for _, w := range h.Workers {
		x.restart(w)
	}
}

// restart starts a stopped worker again, once no NATS node is down: a worker
// that cannot reach NATS when it starts exits at once (a supervisor would
// start it again; the suite counts such an exit as one it did not cause).
func (x *explorer) restart(w *Worker) {
	x.nodes.Lock()
	defer x.nodes.Unlock()
	x.mu.Lock()
	defer x.mu.Unlock()
	if !w.Running() {
		w.Restart(x.t)
	}
}

// shrinkCommandsStream gives the commands stream a small MaxBytes, as an
// operator may.
func (x *explorer) shrinkCommandsStream() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := x.h.JS.Stream(ctx, StreamCommands)
	if err != nil {
		x.t.Fatalf("commands stream: %v", err)
	}
	cfg := st.CachedInfo().Config
	cfg.MaxBytes = exploreSmallStream
	if _, err := x.h.JS.UpdateStream(ctx, cfg); err != nil {
		x.t.Fatalf("shrink the commands stream: %v", err)
	}
}

func (x *explorer) do(i int, o exploreOp) {
	h := x.h
	switch o.Kind {
	case opPublish, opInvalid, opRepublish:
		for _, c := range o.Cmds {
			x.publish(c, o.Kind == opRepublish)
		}
	case opCancelCommand:
		x.cancel(fmt.Sprintf("x%d-k%02d", x.s.Seed%1000, i), o.CommandID, "", o.Enterprise)
	case opCancelMeeting:
		x.cancel(fmt.Sprintf("x%d-k%02d", x.s.Seed%1000, i), "", o.Meeting, o.Enterprise)
	case opNewPlan:
		x.cancel(fmt.Sprintf("x%d-k%02d", x.s.Seed%1000, i), "", o.Meeting, o.Enterprise)
		for k, c := range o.Cmds {
			time.Sleep(o.Gaps[k]) // the schedule's own pace
			x.publish(c, false)
		}
	case opReplay:
		x.replay(fmt.Sprintf("x%d-r%02d", x.s.Seed%1000, i), o.Class)
	case opKill, opTerm:
		w := h.Workers[o.Worker]
		x.mu.Lock()
		running := w.Running()
		if running {
			if o.Kind == opKill {
				w.Kill()
			} else {
				w.Terminate()
			}
		}
		x.mu.Unlock()
		if !running {
			return
		}
		from := time.Now()
		time.Sleep(o.Pause) // the nemesis's pause
		if o.Kind == opTerm {
			w.Wait(30 * time.Second)
		}
		x.restart(w)
		x.hist.add(func() {
			x.hist.Faults = append(x.hist.Faults, faultRecord{Kind: o.Kind, What: fmt.Sprintf("worker %d", o.Worker), From: from, Till: time.Now()})
		})
	case opAllDown:
		x.mu.Lock()
		for _, w := range h.Workers {
			w.Kill()
		}
		x.mu.Unlock()
		from := time.Now()
		time.Sleep(o.Pause)
		for _, w := range h.Workers {
			x.restart(w)
		}
		x.hist.add(func() {
			x.hist.Faults = append(x.hist.Faults, faultRecord{Kind: o.Kind, What: "every worker killed", From: from, Till: time.Now()})
		})
	case opAPI:
		from := time.Now()
		h.Proxy.SetFaults(o.Faults)
		time.Sleep(o.Pause)
		h.Proxy.SetFaults(Faults{})
		x.hist.add(func() {
			x.hist.Faults = append(x.hist.Faults, faultRecord{Kind: o.Kind, What: o.FaultName, From: from, Till: time.Now()})
		})
	case opNATS:
		x.nodes.Lock()
		defer x.nodes.Unlock()
		from := time.Now()
		what := fmt.Sprintf("node %d killed", o.Node)
		if o.Isolate {
			what = fmt.Sprintf("node %d isolated", o.Node)
			h.NATS.Isolate(o.Node)
			time.Sleep(o.Pause)
			h.NATS.Rejoin(o.Node)
		} else {
			h.NATS.KillNode(o.Node)
			time.Sleep(o.Pause)
			h.NATS.StartNode(o.Node)
		}
		x.hist.add(func() {
			x.hist.Faults = append(x.hist.Faults, faultRecord{Kind: o.Kind, What: what, From: from, Till: time.Now()})
		})
	}
}

// publish publishes a command with its commandId as Nats-Msg-Id, retrying
// (the stream dedupes) for up to 30 s; a command never stored is recorded as
// refused. A republish sends the first publish's body again.
func (x *explorer) publish(c exploreCmd, again bool) {
	rec := pubRecord{Cmd: c, At: time.Now()}
	rec.Body = c.body(rec.At)
	if again {
		x.hist.mu.Lock()
		for _, p := range x.hist.Pubs {
			if p.Cmd.ID == c.ID {
				rec.Body = p.Body
				break
			}
		}
		x.hist.mu.Unlock()
	}
	msg := &nats.Msg{Subject: SubjectCreate, Data: rec.Body, Header: nats.Header{}}
	msg.Header.Set(nats.MsgIdHdr, c.ID)
	rec.Err = poll(30*time.Second, 200*time.Millisecond, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		ack, err := x.h.JS.PublishMsg(ctx, msg)
		if err == nil {
			rec.Seq, rec.Duplicate = ack.Sequence, ack.Duplicate
		}
		return err
	})
	x.hist.add(func() { x.hist.Pubs = append(x.hist.Pubs, rec) })
}

// cancel publishes a cancel (by commandId or by meeting) and records its
// stream sequence.
func (x *explorer) cancel(id, commandID, meeting, enterprise string) {
	rec := cancelRecord{ID: id, CommandID: commandID, Meeting: meeting, Enterprise: enterprise, At: time.Now()}
	ent := enterprise
	if ent == "" {
		ent = Enterprise
	}
	body, _ := json.Marshal(struct {
		CommandID         string `json:"commandId,omitempty"`
		MeetingRoomNumber string `json:"meetingRoomNumber,omitempty"`
		EnterpriseID      string `json:"enterpriseId"`
		Reason            string `json:"reason"`
	}{commandID, meeting, ent, "explorer"})
	msg := &nats.Msg{Subject: "xylink.groups.cancel", Data: body, Header: nats.Header{}}
	msg.Header.Set(nats.MsgIdHdr, id)
	rec.Err = poll(30*time.Second, 200*time.Millisecond, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		ack, err := x.h.JS.PublishMsg(ctx, msg)
		if err == nil {
			rec.Seq = ack.Sequence
		}
		return err
	})
	x.hist.add(func() { x.hist.Cancels = append(x.hist.Cancels, rec) })
}

// replayWait is how long a replay waits for its commands' outcomes: a
// replayed command may wait the maximum wait for its meeting, then a minute
// more to reconcile an unknown outcome, and a slow tenant's probes are spread
// over its probe share.
const replayWait = 2 * time.Minute

// replay runs `xygroup replay` for a class, as an operator would.
func (x *explorer) replay(id, class string) {
	rec := replayRecord{ID: id, Class: class, Start: time.Now()}
	rec.Stdout, rec.Stderr, rec.Code = x.h.Run(replayWait+30*time.Second, "replay", "--class", class, "--id", id,
		"--enterprise-id", Enterprise, "--timeout", replayWait.String(), "--no-progress")
	rec.End = time.Now()
	if rec.Code == 0 && strings.Contains(rec.Stderr, "nothing to replay") {
		rec.Summary = &replaySummary{}
	}
	for line := range strings.Lines(rec.Stdout) {
		var s replaySummary
		if json.Unmarshal([]byte(line), &s) == nil {
			rec.Summary = &s
		}
	}
	x.hist.add(func() { x.hist.Replays = append(x.hist.Replays, rec) })
}

// settle waits until every stored command has a terminal event (at most d, or
// until nothing ended for StallTimeout) and the events stream is quiet.
func (x *explorer) settle(d time.Duration) {
	var ids []string
	seen := map[string]bool{}
	for _, p := range x.hist.Pubs {
		if p.Err == nil && !seen[p.Cmd.ID] {
			seen[p.Cmd.ID] = true
			ids = append(ids, p.Cmd.ID)
		}
	}
	x.h.Events.AwaitEnded(ids, d)
	x.h.Events.AwaitQuiet(3*time.Second, 30*time.Second)
}
