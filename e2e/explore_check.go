package e2e

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"
)

// The explorer's checker: the contract over a run's recorded history (the
// publishes and cancels with their stream sequences, the replays, the events,
// the fault proxy's arrivals and the nemesis), from outside.

// exploreRules name the checker's rules (the index is the rule's number).
var exploreRules = []string{
	0: "a worker or NATS node exited on its own",
	1: "one terminal event per stored command",
	2: "no request after a success (unless a worker died between, then reconciled)",
	3: "the class is right (a create at the API is not a failure; no expiry before the wait; no call before notBefore)",
	4: "nothing sent after a cancel; a cancelled command never created",
	5: "a cancel by meeting cancels what was published before it, and nothing after it",
	6: "the enterprise's rate in every sliding second",
	7: "every replay ends, with a new terminal event per replayed command",
}

type violation struct {
	Rule    int
	Kind    string // what of the rule broke, short
	Command string
	What    string
}

// checked is one run's figures and violations.
type checked struct {
	Violations []violation
	ByRule     map[int]int
	ByKind     map[string]int // "<rule>:<kind>"
	Commands   int            // stored
	Refused    int
	Report     *Report
	// History lists what was recorded about a command.
	History func(id string) []string
}

type checker struct {
	x      *explorer
	hs     *history
	events []Event
	// per command
	first    map[string]*pubRecord // the first stored publish
	spec     map[string]exploreCmd
	gen0     map[string][]Event // terminal events, not a replay's
	byReplay map[string]map[string][]Event
	arrivals map[string][]Arrival // by groupName (the commandId)
	out      *checked
}

func (x *explorer) check() *checked {
	c := &checker{x: x, hs: x.hist, events: x.h.Events.Events(), first: map[string]*pubRecord{}, spec: map[string]exploreCmd{},
		gen0: map[string][]Event{}, byReplay: map[string]map[string][]Event{}, arrivals: map[string][]Arrival{},
		out: &checked{ByRule: map[int]int{}, ByKind: map[string]int{}}}
	refused := map[string]bool{}
	for i := range c.hs.Pubs {
		p := &c.hs.Pubs[i]
		c.spec[p.Cmd.ID] = p.Cmd
		if p.Err != nil {
			refused[p.Cmd.ID] = true
			continue
		}
		if c.first[p.Cmd.ID] == nil || p.Seq < c.first[p.Cmd.ID].Seq {
			c.first[p.Cmd.ID] = p
		}
	}
	for id := range refused {
		if c.first[id] == nil {
			c.out.Refused++
		}
	}
	c.out.Commands = len(c.first)
	for _, e := range c.events {
		if !e.Terminal() {
			continue
		}
		if _, rid, ok := strings.Cut(e.MsgID, ".replay."); ok {
			if c.byReplay[rid] == nil {
				c.byReplay[rid] = map[string][]Event{}
			}
			c.byReplay[rid][e.CommandID()] = append(c.byReplay[rid][e.CommandID()], e)
			continue
		}
		c.gen0[e.CommandID()] = append(c.gen0[e.CommandID()], e)
	}
	for _, a := range x.h.Proxy.Arrivals() {
		c.arrivals[a.GroupName] = append(c.arrivals[a.GroupName], a)
	}
	for _, as := range c.arrivals {
		sort.Slice(as, func(i, j int) bool { return as[i].Sent.Before(as[j].Sent) })
	}
	c.processes()
	c.oneTerminal()
	c.noResend()
	c.classes()
	c.cancels()
	c.rate()
	c.replays()
	c.out.History = c.historyOf
	sort.SliceStable(c.out.Violations, func(i, j int) bool { return c.out.Violations[i].Rule < c.out.Violations[j].Rule })
	return c.out
}

func (c *checker) add(rule int, kind, cmd, format string, args ...any) {
	c.out.Violations = append(c.out.Violations, violation{Rule: rule, Kind: kind, Command: cmd, What: fmt.Sprintf(format, args...)})
	c.out.ByRule[rule]++
	c.out.ByKind[fmt.Sprintf("%d:%s", rule, kind)]++
}

// at is a time as an offset from the run's start.
func (c *checker) at(t time.Time) string {
	return fmt.Sprintf("+%.3fs", t.Sub(c.hs.Start).Seconds())
}

func (c *checker) processes() {
	for _, w := range c.x.h.Workers {
		for _, s := range w.UnexpectedExits() {
			c.add(0, "exit", "", "%s", s)
		}
	}
	if c.x.h.NATS != nil {
		for _, s := range c.x.h.NATS.UnexpectedExits() {
			c.add(0, "exit", "", "%s", s)
		}
	}
}

// Rule 1: every stored command ends in exactly one terminal event (a replay's
// are counted by rule 7); a refused one needs none; no terminal event for a
// command never published.
func (c *checker) oneTerminal() {
	// The commands stream's first sequence: a command below it was discarded
	// by the stream's limits.
	var firstSeq uint64
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if st, err := c.x.h.JS.Stream(ctx, StreamCommands); err == nil {
		if info, err := st.Info(ctx); err == nil {
			firstSeq = info.State.FirstSeq
		}
	}
	for id := range c.first {
		switch n := len(c.gen0[id]); {
		case n == 0 && c.first[id].Seq < firstSeq:
			c.add(1, "discarded", id, "stored (sequence %d), discarded by the commands stream's limits (its first sequence is %d) before it ended: no terminal event",
				c.first[id].Seq, firstSeq)
		case n == 0:
			c.add(1, "no-terminal", id, "stored (sequence %d), no terminal event", c.first[id].Seq)
		case n > 1:
			c.add(1, "terminals", id, "%d terminal events", n)
		}
	}
	for id := range c.gen0 {
		if c.first[id] == nil {
			c.add(1, "unknown", id, "a terminal event for a command never stored")
		}
	}
}

// killedBetween reports whether a worker was killed (SIGKILL) in [from, to].
func (c *checker) killedBetween(from, to time.Time) bool {
	for _, f := range c.hs.Faults {
		if (f.Kind == opKill || f.Kind == opAllDown) && !f.From.Before(from.Add(-time.Second)) && !f.From.After(to) {
			return true
		}
	}
	return false
}

// natsFaultBetween names a NATS fault that overlaps [from, to], if any.
func (c *checker) natsFaultBetween(from, to time.Time) string {
	for _, f := range c.hs.Faults {
		if f.Kind == opNATS && !f.Till.Before(from) && !f.From.After(to) {
			return f.What
		}
	}
	return ""
}

// terminalAt is the terminal event of the command's generation that covers
// t: its first life, or the replay that started last before t.
func (c *checker) terminalAt(id string, t time.Time) (Event, bool) {
	var best *replayRecord
	for i := range c.hs.Replays {
		r := &c.hs.Replays[i]
		if len(c.byReplay[r.ID][id]) > 0 && !r.Start.After(t) && (best == nil || r.Start.After(best.Start)) {
			best = r
		}
	}
	if best != nil {
		return c.byReplay[best.ID][id][0], true
	}
	if evs := c.gen0[id]; len(evs) > 0 {
		return evs[0], true
	}
	return Event{}, false
}

// Rule 2: no request of a command after a worker got a 200 for it, unless a
// worker was killed between (the documented crash case), and then the command
// ends created.
func (c *checker) noResend() {
	for id, as := range c.arrivals {
		if c.first[id] == nil {
			continue
		}
		for i, a := range as {
			// A success the worker read: answered 200 within its timeout.
			if !a.Forwarded || a.Answer != 200 || a.Answered.Sub(a.Sent) > exploreAPITimeout-250*time.Millisecond {
				continue
			}
			for _, b := range as[i+1:] {
				if !b.Sent.After(a.At) {
					continue
				}
				e, ok := c.terminalAt(id, b.Sent)
				switch {
				case !c.killedBetween(a.At, b.Sent):
					extra := ""
					if f := c.natsFaultBetween(a.At, b.Sent); f != "" {
						extra = " (" + f + " meanwhile)"
					}
					c.add(2, "resent", id, "a request at %s after a 200 at %s, no worker killed between%s", c.at(b.Sent), c.at(a.At), extra)
				case ok && e.Outcome() != "created":
					c.add(2, "resent-not-created", id, "sent again at %s after a 200 at %s (a worker was killed), but ended %s", c.at(b.Sent), c.at(a.At), e.Outcome())
				default:
					continue
				}
				break
			}
			break
		}
	}
}

// Rule 3: a create that took effect at the API is never reported failed; no
// failed.meeting_not_started before max(received, notBefore) + the maximum wait
// (or its own deadline); no call before notBefore.
func (c *checker) classes() {
	for id, as := range c.arrivals {
		p := c.first[id]
		if p == nil {
			continue
		}
		for _, a := range as {
			if p.Cmd.NotBefore != nil && a.Sent.Before(p.At.Add(*p.Cmd.NotBefore)) {
				c.add(3, "before-notBefore", id, "a request at %s, before its notBefore %s", c.at(a.Sent), c.at(p.At.Add(*p.Cmd.NotBefore)))
				break
			}
		}
		for _, a := range as {
			if !a.Forwarded || a.Upstream != 200 {
				continue
			}
			e, ok := c.terminalAt(id, a.At)
			if ok && strings.HasPrefix(e.Outcome(), "failed.") && e.Outcome() != "failed.cancelled" {
				c.add(3, "created-"+e.Outcome(), id, "created at the API at %s, reported %s at %s", c.at(a.At), e.Outcome(), c.at(e.Stored))
				break
			}
		}
	}
	for id, evs := range c.gen0 {
		p := c.first[id]
		if p == nil || len(evs) == 0 || evs[0].Outcome() != "failed.meeting_not_started" {
			continue
		}
		bound := p.At.Add(exploreMaxWait)
		why := "received + max wait"
		if p.Cmd.NotBefore != nil && *p.Cmd.NotBefore > 0 {
			bound, why = p.At.Add(*p.Cmd.NotBefore+exploreMaxWait), "notBefore + max wait"
		}
		if p.Cmd.Deadline != nil {
			bound, why = p.At.Add(*p.Cmd.Deadline), "its deadline"
		}
		if evs[0].Stored.Before(bound) {
			c.add(3, "expired-early", id, "failed.meeting_not_started at %s, before %s (%s), after %d calls", c.at(evs[0].Stored), c.at(bound), why,
				len(c.arrivals[id]))
		}
	}
}

// Rules 4 and 5: cancels.
func (c *checker) cancels() {
	// 4: nothing sent after the cancelled event; never created.
	for id, evs := range c.gen0 {
		if len(evs) == 0 || evs[0].Outcome() != "failed.cancelled" {
			continue
		}
		e := evs[0]
		for _, a := range c.arrivals[id] {
			if a.Sent.After(e.Stored) {
				if e2, ok := c.terminalAt(id, a.Sent); ok && e2.Seq != e.Seq {
					continue // a replay's
				}
				c.add(4, "sent-after-cancel", id, "a request at %s after its cancelled event at %s", c.at(a.Sent), c.at(e.Stored))
				break
			}
		}
		for _, a := range c.arrivals[id] {
			if a.Forwarded && a.Upstream == 200 {
				if e2, ok := c.terminalAt(id, a.At); ok && e2.Seq == e.Seq {
					c.add(4, "cancelled-created", id, "reported cancelled at %s, yet created at the API at %s", c.at(e.Stored), c.at(a.At))
					break
				}
			}
		}
	}
	// 5: cancels by meeting.
	handled := map[string]time.Time{} // the last answer of each cancel
	rejected := map[string]map[string]bool{}
	cancelledBy := map[string]string{}
	for _, e := range c.events {
		cid, _ := e.Fields["cancelId"].(string)
		if cid == "" {
			continue
		}
		if e.Stored.After(handled[cid]) {
			handled[cid] = e.Stored
		}
		switch {
		case e.Subject == SubjectCancelRejected:
			if rejected[cid] == nil {
				rejected[cid] = map[string]bool{}
			}
			rejected[cid][e.CommandID()] = true
		case e.Outcome() == "failed.cancelled" && !strings.Contains(e.MsgID, ".replay."):
			cancelledBy[e.CommandID()] = cid
		}
	}
	for _, k := range c.hs.Cancels {
		if k.Meeting == "" || k.Err != nil {
			continue
		}
		for id, p := range c.first {
			if p.Cmd.Meeting != k.Meeting || p.Cmd.Enterprise != k.Enterprise || p.Cmd.Raw != nil {
				continue
			}
			if p.Seq > k.Seq {
				if cancelledBy[id] == k.ID {
					c.add(5, "cancelled-later", id, "published at sequence %d, after the cancel by meeting %s (sequence %d), and cancelled by it", p.Seq, k.ID, k.Seq)
				}
				continue
			}
			evs := c.gen0[id]
			if len(evs) == 0 || !evs[0].Stored.After(k.At) {
				continue // no end (rule 1), or ended before the cancel
			}
			h, known := handled[k.ID]
			when := "the cancel's last answer at " + c.at(h)
			if !known {
				// No answer at all: it was handled once a worker ran after
				// its publish, within seconds.
				h = c.workersUpAfter(k.At).Add(5 * time.Second)
				when = "no answer to the cancel; it was handled by " + c.at(h) + " at the latest"
			}
			if !evs[0].Stored.After(h) {
				continue
			}
			sent := false
			for _, a := range c.arrivals[id] {
				if a.Sent.Before(h) {
					sent = true
				}
			}
			if sent || evs[0].Outcome() == "failed.cancelled" || rejected[k.ID][id] {
				continue
			}
			c.add(5, "missed-earlier", id, "published at sequence %d before the cancel by meeting %s (sequence %d), never sent (%s), ended %s at %s, not cancelled nor named by a cancel_rejected answer",
				p.Seq, k.ID, k.Seq, when, evs[0].Outcome(), c.at(evs[0].Stored))
		}
	}
}

// workersUpAfter is the first moment at or after t when not every worker was
// down.
func (c *checker) workersUpAfter(t time.Time) time.Time {
	for _, f := range c.hs.Faults {
		if f.Kind == opAllDown && !t.Before(f.From) && t.Before(f.Till) {
			t = f.Till
		}
	}
	return t
}

// Rule 6: per enterprise, at most its rate in any sliding second: at the API,
// or as the workers sent them when the fault proxy delayed requests on their
// way in (a varying delay the workers cannot see bunches calls up).
func (c *checker) rate() {
	h := c.x.h
	h.Commands = h.Commands[:0]
	for id, p := range c.first {
		h.Commands = append(h.Commands, Command{ID: id, Enterprise: p.Cmd.Enterprise, Meeting: p.Cmd.Meeting})
	}
	r := h.report()
	c.out.Report = r
	delayed := false
	for _, o := range c.x.s.Ops {
		delayed = delayed || (o.Kind == opAPI && (o.Faults.InLatency > 0 || o.Faults.InJitter > 0))
	}
	for ent, n := range r.SentWindow {
		if l := h.limit(ent); float64(n) > l {
			c.add(6, "rate-sent", "", "enterprise %s: %d calls sent in one sliding second, limit %g", ent, n, l)
		}
	}
	if !delayed {
		for ent, n := range r.MaxWindow {
			if l := h.limit(ent); float64(n) > l {
				c.add(6, "rate-api", "", "enterprise %s: %d calls at the API in one sliding second, limit %g", ent, n, l)
			}
		}
	}
}

// Rule 7: every replay ends within its wait (exit 0, or 1 when commands failed
// again, with nothing pending), with one new terminal event per command it
// published.
func (c *checker) replays() {
	for _, r := range c.hs.Replays {
		s := r.Summary
		switch {
		case r.Code == -1:
			c.add(7, "hung", "", "replay %s (class %s) did not end within %v: %s", r.ID, r.Class, replayWait+30*time.Second, clipS(r.Stderr, 300))
			continue
		case s == nil && r.Code == 1 && replayStoppedCleanly(r.Stderr):
			// Refused by a full commands stream, or NATS away when it began:
			// it said so and how to resume, as a publisher is told; what it
			// published before is checked as every command is (rule 1).
			continue
		case s == nil:
			c.add(7, "error", "", "replay %s (class %s) exited %d without a summary: %s", r.ID, r.Class, r.Code, clipS(r.Stderr, 300))
			continue
		case s.Pending > 0:
			c.add(7, "pending", "", "replay %s (class %s): %d pending after its wait: %v", r.ID, r.Class, s.Pending, first(s.PendingIDs, 5))
		case r.Code != 0 && !(r.Code == 1 && len(s.Failed) > 0):
			c.add(7, "exit", "", "replay %s (class %s) exited %d: %s", r.ID, r.Class, r.Code, clipS(r.Stderr, 300))
		}
		got := c.byReplay[r.ID]
		for id, evs := range got {
			if len(evs) > 1 {
				c.add(7, "terminals", id, "%d terminal events in replay %s", len(evs), r.ID)
			}
		}
		if len(got) < s.Published {
			c.add(7, "no-terminal", "", "replay %s (class %s) published %d commands, %d have a terminal event of it", r.ID, r.Class, s.Published, len(got))
		}
	}
}

// replayStoppedCleanly: a replay stopped because NATS refused or could not
// take what it publishes, and said how to resume.
func replayStoppedCleanly(stderr string) bool {
	return strings.Contains(stderr, "refused, not stored") || strings.Contains(stderr, "no responders available")
}

func clipS(s string, n int) string {
	s = strings.TrimSpace(s)
	if i := strings.Index(s, "panic:"); i >= 0 {
		s, n = s[i:], max(n, 2500) // the panic and its stack
	}
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

// historyOf is every recorded line about a command (or, for "", the run's
// faults), in time order.
func (c *checker) historyOf(id string) []string {
	type line struct {
		t time.Time
		s string
	}
	var lines []line
	add := func(t time.Time, format string, args ...any) {
		lines = append(lines, line{t, c.at(t) + " " + fmt.Sprintf(format, args...)})
	}
	spec, known := c.spec[id]
	for _, p := range c.hs.Pubs {
		if p.Cmd.ID == id {
			switch {
			case p.Err != nil:
				add(p.At, "publish refused: %v", p.Err)
			default:
				add(p.At, "publish seq %d duplicate %v: %s", p.Seq, p.Duplicate, clip(p.Body, 240))
			}
		}
	}
	for _, k := range c.hs.Cancels {
		if (k.CommandID != "" && k.CommandID == id) || (known && k.Meeting != "" && k.Meeting == spec.Meeting && k.Enterprise == spec.Enterprise) {
			add(k.At, "cancel %s seq %d (command %q meeting %q) err %v", k.ID, k.Seq, k.CommandID, k.Meeting, k.Err)
		}
	}
	for _, a := range c.arrivals[id] {
		add(a.Sent, "API request sent; at the API %s, forwarded %v, sandbox %d, answered %d at %s", c.at(a.At), a.Forwarded, a.Upstream,
			a.Answer, c.at(a.Answered))
	}
	for _, e := range c.events {
		if e.CommandID() == id {
			add(e.Stored, "event seq %d %s (msg id %s) %s", e.Seq, e.Outcome(), e.MsgID, clip(e.Data, 200))
		}
	}
	for _, r := range c.hs.Replays {
		add(r.Start, "replay %s class %s started; ended %s, exit %d", r.ID, r.Class, c.at(r.End), r.Code)
	}
	if known {
		for _, m := range c.x.s.Meetings {
			if m.Number == spec.Meeting {
				if m.Never {
					add(c.hs.Start, "meeting %s never starts", m.Number)
				} else {
					add(c.hs.Start.Add(m.StartsIn), "meeting %s starts", m.Number)
				}
			}
		}
	}
	for _, f := range c.hs.Faults {
		add(f.From, "fault %s %s until %s", f.Kind, f.What, c.at(f.Till))
	}
	sort.SliceStable(lines, func(i, j int) bool { return lines[i].t.Before(lines[j].t) })
	out := make([]string, len(lines))
	for i, l := range lines {
		out[i] = l.s
	}
	return out
}
