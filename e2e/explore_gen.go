package e2e

import (
	"encoding/json"
	"fmt"
	mrand "math/rand/v2"
	"sort"
	"strings"
	"time"
)

// The explorer's generator: a schedule of operations and faults drawn from one
// seed. Every draw comes from a PCG seeded with the seed, and every time in a
// schedule is an offset from the run's start, so that one seed always gives the
// same schedule (the timing of the machine around it may differ).

// Explorer settings the workers run with: a short maximum wait so that
// commands expire within a run, and short probe and redelivery intervals.
const (
	exploreMaxWait       = 8 * time.Second
	exploreProbeInterval = 2 * time.Second
	exploreAckWait       = 10 * time.Second
	exploreAPITimeout    = 3 * time.Second
	// exploreSmallStream is the commands stream's MaxBytes in a run that
	// shrinks it (about 150 commands): with the workers down, a burst of 300
	// overfills it.
	exploreSmallStream = 32 << 10
)

// exploreTenants are the enterprises besides the default one: one with a small
// rate.
var exploreTenants = []Tenant{
	{ID: "e2e-slow", Token: "e2e-slow-token-5b7e2c9d1f3a4086", Rate: 2},
	{ID: "e2e-other", Token: "e2e-other-token-8c1d4f6a2b9e3075", Rate: 10},
}

type opKind string

const (
	opPublish       opKind = "publish"        // a burst of commands
	opRepublish     opKind = "republish"      // a command again, same id and body
	opInvalid       opKind = "invalid"        // invalid commands
	opCancelCommand opKind = "cancel-command" // a cancel by commandId
	opCancelMeeting opKind = "cancel-meeting" // a cancel by meeting
	opNewPlan       opKind = "new-plan"       // a cancel by meeting, then new commands for it
	opReplay        opKind = "replay"         // `xygroup replay --class`
	opKill          opKind = "kill"           // a worker killed (SIGKILL), restarted after Pause
	opTerm          opKind = "term"           // a worker stopped (SIGTERM), restarted after Pause
	opAllDown       opKind = "all-down"       // every worker killed for Pause
	opAPI           opKind = "api"            // the fault proxy's faults for Pause
	opNATS          opKind = "nats"           // a NATS node killed (or isolated) for Pause
)

func (k opKind) fault() bool {
	switch k {
	case opKill, opTerm, opAllDown, opAPI, opNATS:
		return true
	}
	return false
}

// exploreCmd is a command of the schedule. Its times are offsets from the
// moment it is published, so that its body is the same from run to run.
type exploreCmd struct {
	ID         string
	Enterprise string // "" : the default tenant
	Meeting    string
	NotBefore  *time.Duration
	Deadline   *time.Duration
	// Raw, when set, is an invalid command's payload as is.
	Raw []byte
}

// body is the command's payload for a publish at t.
func (c exploreCmd) body(t time.Time) []byte {
	if c.Raw != nil {
		return c.Raw
	}
	m := map[string]any{"commandId": c.ID, "meetingRoomNumber": c.Meeting, "mode": "random", "groupCount": 2,
		"groupName": c.ID}
	if c.Enterprise != "" {
		m["enterpriseId"] = c.Enterprise
	}
	if c.NotBefore != nil {
		m["notBefore"] = t.Add(*c.NotBefore).UTC().Format(time.RFC3339Nano)
	}
	if c.Deadline != nil {
		m["deadline"] = t.Add(*c.Deadline).UTC().Format(time.RFC3339Nano)
	}
	b, _ := json.Marshal(m)
	return b
}

// exploreMeeting is a sandbox meeting: it starts StartsIn after the run's start,
// or never.
type exploreMeeting struct {
	Number     string
	Enterprise string
	StartsIn   time.Duration
	Never      bool
}

type exploreOp struct {
	At   time.Duration
	Kind opKind
	Cmds []exploreCmd // publish, invalid, new-plan, republish
	// CommandID, or Meeting and Enterprise, that a cancel names.
	CommandID  string
	Meeting    string
	Enterprise string
	Worker     int
	Node       int
	Isolate    bool
	Pause      time.Duration
	Faults     Faults
	FaultName  string
	Class      string // replay
	// Gaps: a new plan's pause before each of its commands.
	Gaps []time.Duration
}

func (o exploreOp) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "+%5.1fs %-14s", o.At.Seconds(), o.Kind)
	switch o.Kind {
	case opPublish, opInvalid, opRepublish:
		ids := make([]string, len(o.Cmds))
		for i, c := range o.Cmds {
			ids[i] = c.ID
		}
		if len(ids) > 6 {
			ids = append(ids[:6:6], fmt.Sprintf("… (%d)", len(o.Cmds)))
		}
		fmt.Fprintf(&b, " %s", strings.Join(ids, " "))
	case opCancelCommand:
		fmt.Fprintf(&b, " %s", o.CommandID)
	case opCancelMeeting:
		fmt.Fprintf(&b, " meeting %s %s", o.Meeting, o.Enterprise)
	case opNewPlan:
		fmt.Fprintf(&b, " meeting %s %s, then %d commands", o.Meeting, o.Enterprise, len(o.Cmds))
	case opReplay:
		fmt.Fprintf(&b, " class %s", o.Class)
	case opKill, opTerm:
		fmt.Fprintf(&b, " worker %d for %v", o.Worker, o.Pause)
	case opAllDown:
		fmt.Fprintf(&b, " for %v", o.Pause)
	case opAPI:
		fmt.Fprintf(&b, " %s for %v", o.FaultName, o.Pause)
	case opNATS:
		verb := "killed"
		if o.Isolate {
			verb = "isolated"
		}
		fmt.Fprintf(&b, " node %d %s for %v", o.Node, verb, o.Pause)
	}
	return b.String()
}

// exploreSchedule is one seed's run.
type exploreSchedule struct {
	Seed        uint64
	Nodes       int
	Workers     int
	V2          bool
	SmallStream bool
	Meetings    []exploreMeeting
	Ops         []exploreOp
	Span        time.Duration // when the last operation is due
}

func (s *exploreSchedule) counts() (ops, faults, cmds int) {
	for _, o := range s.Ops {
		if o.Kind.fault() {
			faults++
		} else {
			ops++
		}
		if o.Kind != opRepublish {
			cmds += len(o.Cmds)
		}
	}
	return
}

// Describe lists the schedule, one line per operation.
func (s *exploreSchedule) Describe() string {
	var b strings.Builder
	fmt.Fprintf(&b, "seed %d: %d node(s), %d workers, signature %s, small commands stream %v, %d meetings\n",
		s.Seed, s.Nodes, s.Workers, map[bool]string{true: "2.0", false: "1.0"}[s.V2], s.SmallStream, len(s.Meetings))
	for _, o := range s.Ops {
		b.WriteString("  " + o.String() + "\n")
	}
	return b.String()
}

// exploreProfile bounds a schedule.
type exploreProfile struct {
	Span     time.Duration // operations are drawn in [0, Span)
	Bursts   int           // publish bursts
	Burst    int           // largest burst
	Faults   int           // nemesis operations
	Clusters bool          // may draw a 3-node cluster
}

var (
	shortProfile = exploreProfile{Span: 25 * time.Second, Bursts: 5, Burst: 12, Faults: 5}
	longProfile  = exploreProfile{Span: 45 * time.Second, Bursts: 8, Burst: 20, Faults: 9, Clusters: true}
)

// generate draws seed's schedule.
func generate(seed uint64, p exploreProfile) *exploreSchedule {
	r := mrand.New(mrand.NewPCG(seed, 0xe4910e))
	g := &gen{r: r, s: &exploreSchedule{Seed: seed, Nodes: 1, Workers: 3}, p: p}
	s := g.s
	if p.Clusters && r.IntN(4) == 0 {
		s.Nodes = 3
	}
	s.V2 = r.IntN(3) == 0
	s.SmallStream = r.IntN(4) == 0
	dur := g.dur
	at := func() time.Duration { return dur(0, p.Span) }

	// Bursts of valid commands for many meetings and the tenants.
	var published []exploreOp
	for range p.Bursts {
		o := exploreOp{At: at(), Kind: opPublish}
		n := 1 + r.IntN(p.Burst)
		for range n {
			o.Cmds = append(o.Cmds, g.command(o.At, ""))
		}
		published = append(published, o)
	}
	// A burst while every worker is down, into a small commands stream.
	if s.SmallStream {
		down := exploreOp{At: dur(p.Span/4, p.Span/2), Kind: opAllDown, Pause: dur(6*time.Second, 10*time.Second)}
		burst := exploreOp{At: down.At + time.Second, Kind: opPublish}
		for range 300 {
			burst.Cmds = append(burst.Cmds, g.command(burst.At, "never-late"))
		}
		published = append(published, burst)
		s.Ops = append(s.Ops, down)
	}
	s.Ops = append(s.Ops, published...)
	var all []exploreCmd
	var when []time.Duration
	for _, o := range published {
		for _, c := range o.Cmds {
			all = append(all, c)
			when = append(when, o.At)
		}
	}

	// Invalid commands, replays by class (later in the run, when there are
	// failures to replay).
	inv := exploreOp{At: dur(0, p.Span/2), Kind: opInvalid}
	for i, raw := range []string{`[1,2]`, `"x"`, `not json`, `{"commandId":"%s","mode":"random","groupCount":2}`,
		`{"commandId":"%s","meetingRoomNumber":"91","mode":"random","groupCount":"two"}`, `{}`, `null`} {
		id := fmt.Sprintf("s%d-bad-%d", seed%1000, i)
		if strings.Contains(raw, "%s") {
			raw = fmt.Sprintf(raw, id)
		}
		if r.IntN(3) > 0 {
			inv.Cmds = append(inv.Cmds, exploreCmd{ID: id, Raw: []byte(raw)})
		}
	}
	if len(inv.Cmds) > 0 {
		s.Ops = append(s.Ops, inv)
	}
	classes := []string{"invalid_command", "meeting_not_started", "unavailable", "meeting_not_started,unavailable,invalid_command"}
	for range 1 + r.IntN(2) {
		s.Ops = append(s.Ops, exploreOp{At: dur(p.Span/2, p.Span), Kind: opReplay, Class: classes[r.IntN(len(classes))]})
	}

	// Republishes (same id, same body) and cancels: before, during and after
	// parking, and racing their meeting's start.
	for range 2 + r.IntN(3) {
		i := r.IntN(len(all))
		s.Ops = append(s.Ops, exploreOp{At: when[i] + dur(0, 6*time.Second), Kind: opRepublish, Cmds: []exploreCmd{all[i]}})
	}
	offset := func(i int) time.Duration {
		switch r.IntN(4) {
		case 0:
			return max(0, when[i]-dur(0, time.Second)) // before it is published
		case 1:
			return when[i] + dur(0, 500*time.Millisecond) // as it arrives
		case 2:
			if m := g.meeting(all[i].Meeting); m != nil && !m.Never {
				return max(0, m.StartsIn+dur(-500*time.Millisecond, 500*time.Millisecond)) // racing the release
			}
		}
		return when[i] + dur(time.Second, 7*time.Second) // parked
	}
	for range 2 + r.IntN(4) {
		i := r.IntN(len(all))
		s.Ops = append(s.Ops, exploreOp{At: offset(i), Kind: opCancelCommand, CommandID: all[i].ID, Enterprise: all[i].Enterprise})
	}
	for range 2 + r.IntN(4) {
		i := r.IntN(len(all))
		s.Ops = append(s.Ops, exploreOp{At: offset(i), Kind: opCancelMeeting, Meeting: all[i].Meeting, Enterprise: all[i].Enterprise})
	}
	newPlan := func(i int, at time.Duration) exploreOp {
		o := exploreOp{At: at, Kind: opNewPlan, Meeting: all[i].Meeting, Enterprise: all[i].Enterprise}
		for k := range 1 + r.IntN(3) {
			// Spread over a probe interval: one may park as the meeting's
			// last command ends and the meeting is forgotten.
			o.Gaps = append(o.Gaps, g.dur(0, exploreProbeInterval+time.Second/2))
			c := g.command(o.At, "")
			c.ID = fmt.Sprintf("%s-plan%d", all[i].ID, k)
			c.Meeting, c.Enterprise, c.Raw = all[i].Meeting, all[i].Enterprise, nil
			o.Cmds = append(o.Cmds, c)
		}
		return o
	}
	for range 1 + r.IntN(3) + p.Bursts/4 {
		i := r.IntN(len(all))
		s.Ops = append(s.Ops, newPlan(i, offset(i)))
	}

	// The nemesis.
	for range p.Faults {
		o := exploreOp{At: at()}
		switch x := r.IntN(11); {
		case x == 10:
			// Every worker down while cancels arrive for commands published
			// before: by meeting, and by meeting with a new plan.
			o.Kind, o.Pause = opAllDown, dur(3*time.Second, 8*time.Second)
			for _, kind := range []opKind{opCancelMeeting, opNewPlan} {
				i := r.IntN(len(all))
				if when[i] > o.At {
					continue
				}
				k := exploreOp{At: o.At + dur(0, o.Pause), Kind: kind, Meeting: all[i].Meeting, Enterprise: all[i].Enterprise}
				if kind == opNewPlan {
					k = newPlan(i, k.At)
				}
				s.Ops = append(s.Ops, k)
			}
		case x < 2:
			o.Kind, o.Worker, o.Pause = opKill, r.IntN(s.Workers), dur(500*time.Millisecond, 5*time.Second)
		case x < 4:
			o.Kind, o.Worker, o.Pause = opTerm, r.IntN(s.Workers), dur(500*time.Millisecond, 5*time.Second)
		case x < 5:
			o.Kind, o.Node, o.Pause = opNATS, r.IntN(s.Nodes), dur(2*time.Second, 8*time.Second)
			o.Isolate = s.Nodes > 1 && r.IntN(2) == 0
		default:
			o.Kind, o.Pause = opAPI, dur(2*time.Second, 8*time.Second)
			o.FaultName, o.Faults = g.apiFaults()
		}
		s.Ops = append(s.Ops, o)
	}
	sort.SliceStable(s.Ops, func(i, j int) bool { return s.Ops[i].At < s.Ops[j].At })
	for _, o := range s.Ops {
		s.Span = max(s.Span, o.At)
	}
	return s
}

type gen struct {
	r *mrand.Rand
	s *exploreSchedule
	p exploreProfile
	n int
}

func (g *gen) dur(lo, hi time.Duration) time.Duration {
	return (lo + time.Duration(g.r.Int64N(int64(hi-lo)+1))).Round(time.Millisecond)
}

func (g *gen) meeting(number string) *exploreMeeting {
	for i := range g.s.Meetings {
		if g.s.Meetings[i].Number == number {
			return &g.s.Meetings[i]
		}
	}
	return nil
}

// command draws a valid command published at at, for a meeting of its own
// that starts at a random time (or never, or as the command would expire).
func (g *gen) command(at time.Duration, kind string) exploreCmd {
	r := g.r
	g.n++
	c := exploreCmd{ID: fmt.Sprintf("s%d-c%03d", g.s.Seed%1000, g.n)}
	c.Meeting = fmt.Sprintf("8%04d%06d", g.s.Seed%10000, g.n)
	switch x := r.IntN(10); {
	case x < 1:
		c.Enterprise = exploreTenants[0].ID
	case x < 3:
		c.Enterprise = exploreTenants[1].ID
	}
	if kind == "never-late" {
		// Started meetings: these commands only need a worker.
		g.s.Meetings = append(g.s.Meetings, exploreMeeting{Number: c.Meeting, Enterprise: c.Enterprise})
		return c
	}
	if len(g.s.Meetings) > 0 && r.IntN(5) == 0 {
		// A meeting with several commands: they park together, the meeting's
		// release lets them out, and some expire meanwhile.
		m := g.s.Meetings[r.IntN(len(g.s.Meetings))]
		c.Meeting, c.Enterprise = m.Number, m.Enterprise
		return c
	}
	m := exploreMeeting{Number: c.Meeting, Enterprise: c.Enterprise}
	switch x := r.IntN(10); {
	case x < 3: // started
	case x < 5:
		m.Never = true
	case x < 7: // as the command would expire: the release races the expiry
		m.StartsIn = max(0, at+exploreMaxWait+g.dur(-time.Second, time.Second))
	default:
		m.StartsIn = at + g.dur(0, 20*time.Second)
	}
	g.s.Meetings = append(g.s.Meetings, m)
	switch r.IntN(4) {
	case 1:
		d := -g.dur(time.Second, 10*time.Second)
		c.NotBefore = &d
	case 2:
		d := g.dur(time.Second, 7*time.Second)
		c.NotBefore = &d
	}
	switch r.IntN(4) {
	case 1:
		d := g.dur(2*time.Second, 5*time.Second)
		c.Deadline = &d
	case 2:
		d := exploreMaxWait + g.dur(2*time.Second, 10*time.Second)
		c.Deadline = &d
	}
	if c.NotBefore != nil && c.Deadline != nil && *c.Deadline < *c.NotBefore {
		d := *c.NotBefore + 2*time.Second
		c.Deadline = &d
	}
	return c
}

// apiFaults draws a phase of API faults.
func (g *gen) apiFaults() (string, Faults) {
	r := g.r
	p := 0.2 + 0.4*r.Float64()
	switch r.IntN(9) {
	case 7:
		return "slow answers (after acting)", Faults{OutLatency: exploreAPITimeout / 3, OutJitter: exploreAPITimeout / 3}
	case 0:
		st := []int{500, 502, 503}[r.IntN(3)]
		return fmt.Sprintf("%d before acting (%.0f%%)", st, 100*p), Faults{ErrorBefore: p, ErrorBeforeStatus: st}
	case 1:
		st := []int{500, 502, 504}[r.IntN(3)]
		return fmt.Sprintf("%d after acting (%.0f%%)", st, 100*p), Faults{ErrorAfter: p, ErrorAfterStatus: st}
	case 2:
		return fmt.Sprintf("429 (%.0f%%)", 100*p), Faults{ErrorBefore: p, ErrorBeforeStatus: 429}
	case 3:
		return "timeouts before acting", Faults{InLatency: exploreAPITimeout / 2, InJitter: exploreAPITimeout}
	case 4:
		return "timeouts after acting", Faults{OutLatency: exploreAPITimeout / 2, OutJitter: exploreAPITimeout}
	case 5:
		return fmt.Sprintf("resets (%.0f%% before, %.0f%% after acting)", 50*p, 50*p), Faults{Reset: p / 2, ResetAfter: p / 2}
	case 6:
		return "latency and jitter", Faults{InLatency: 20 * time.Millisecond, InJitter: 300 * time.Millisecond,
			OutLatency: 20 * time.Millisecond, OutJitter: 300 * time.Millisecond}
	}
	return "slow token endpoint", Faults{TokenDelay: 2 * time.Second, InJitter: 100 * time.Millisecond}
}
