package e2e

import (
	"context"
	"fmt"
	"net/http"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/xygroup/xygroup/xylink/sandbox"
)

// Note adds a line of the scenario's own figures to the summary Check prints.
func (h *Harness) Note(format string, args ...any) {
	h.notes = append(h.notes, fmt.Sprintf(format, args...))
}

// Check awaits the end of every published command (at most timeout) and checks
// the contract from outside; every violation is a test error. It prints the
// scenario's figures in one block and returns them.
//
//   - exactly one terminal event per command, of the expected outcome, with
//     commandId, enterpriseId, meetingRoomNumber, attempts and occurredAt (and
//     command on failures), naming the command's meeting and enterprise;
//   - no event for a command never published, every event JSON;
//   - no meeting created twice at the sandbox;
//   - per enterprise, at most its rate of dynamicGroup calls in any sliding
//     second at the API (the sandbox's arrivals plus the calls the fault proxy
//     answered itself);
//   - no secret in any worker log, every worker log line JSON;
//   - no worker or NATS node exited without the suite asking.
func (h *Harness) Check(timeout time.Duration) *Report {
	t := h.T
	t.Helper()
	ids := IDs(h.Commands)
	ended := h.Events.AwaitEnded(ids, timeout)
	h.Events.AwaitQuiet(2*time.Second, 30*time.Second)
	// A command whose settling failed (an ack or a record lost in a fault)
	// comes back after AckWait: wait for that before counting API calls.
	if h.NATS != nil || len(h.Workers) > 0 {
		if pending := h.awaitSettled(time.Minute); pending != "" {
			t.Errorf("the workers' consumer did not settle within a minute after every command ended: %s", pending)
		}
	}
	r := h.report()
	r.Ended = ended

	// One terminal event per command, of the expected outcome and shape. The
	// violations are grouped by kind: one error per kind, with a count and
	// examples.
	byCmd := h.Events.ByCommand()
	known := map[string]bool{}
	problems := newGrouped()
	var missing []string
	for _, c := range h.Commands {
		known[c.ID] = true
		var terms []Event
		for _, e := range byCmd[c.ID] {
			if e.Terminal() {
				terms = append(terms, e)
			}
		}
		switch {
		case len(terms) == 0:
			missing = append(missing, c.ID)
			continue
		case len(terms) > 1:
			outs := make([]string, len(terms))
			for i, e := range terms {
				outs[i] = fmt.Sprintf("%s@%d", e.Outcome(), e.Seq)
			}
			problems.add(fmt.Sprintf("%d terminal events", len(terms)), fmt.Sprintf("%s %v", c.ID, outs))
		}
		e := terms[0]
		if c.Want != "" && e.Outcome() != c.Want {
			problems.add(fmt.Sprintf("ended %s, want %s", e.Outcome(), c.Want), c.ID+": "+clip(e.Data, 300))
		}
		for _, p := range eventProblems(e, c, h.Config.EnterpriseID) {
			problems.add(fmt.Sprintf("%s event: %s", e.Outcome(), p.kind), c.ID+": "+p.detail)
		}
	}
	problems.report(t)
	if len(missing) > 0 {
		t.Errorf("%d of %d commands have no terminal event (waited at most %v, or %v without any command ending), e.g. %v",
			len(missing), len(ids), timeout, StallTimeout, first(missing, 5))
	}
	for _, e := range h.Events.Events() {
		if e.ParseErr != nil {
			t.Errorf("event %d on %s is not JSON: %v", e.Seq, e.Subject, e.ParseErr)
		} else if !known[e.CommandID()] {
			t.Errorf("event %d on %s for a command never published: %q", e.Seq, e.Subject, e.CommandID())
		}
	}

	// The API side.
	if len(r.DuplicateCreates) > 0 {
		t.Errorf("meetings created more than once (a command sent again after it succeeded): %v", first(r.DuplicateCreates, 10))
	}
	if n := len(r.ResentAfterSuccess); n > 0 {
		if h.resendsExpected == "" {
			t.Errorf("%d commands sent again after their create succeeded (200, then more calls for the same meeting): %v",
				n, first(r.ResentAfterSuccess, 10))
		} else if n > r.Reconciled {
			t.Errorf("%d commands sent again after a success (%s), but only %d reconciled: %v", n, h.resendsExpected,
				r.Reconciled, first(r.ResentAfterSuccess, 10))
		}
	}
	for ent, n := range r.MaxWindow {
		limit := h.limit(ent)
		if h.learning != "" {
			// The guard learns the delay's variation from 429 answers: the
			// workers never send more than the rate in a second, and the
			// API refuses at most 1% of the calls while the guard learns.
			if sent := r.SentWindow[ent]; float64(sent) > limit {
				t.Errorf("enterprise %s: %d dynamicGroup calls sent in one sliding second, limit %g", ent, sent, limit)
			}
			if calls, refused := r.APICalls[ent], r.Answers["429"]; calls > 0 && float64(refused) > 0.01*float64(calls) {
				t.Errorf("enterprise %s: %d of %d calls answered 429 (%.1f%%) while the guard learned %s; at most 1%%",
					ent, refused, calls, 100*float64(refused)/float64(calls), h.learning)
			}
			continue
		}
		if float64(n) > limit {
			t.Errorf("enterprise %s: %d dynamicGroup calls in one sliding second at the API, limit %g", ent, n, limit)
		}
	}

	// The workers' logs and processes.
	for _, w := range h.Workers {
		name := filepath.Base(w.LogPath)
		if found, err := SecretsIn(w.LogPath, append(h.Secrets, h.Proxy.Secrets()...)); err != nil {
			t.Errorf("%s: %v", name, err)
		} else if len(found) > 0 {
			red := make([]string, len(found))
			for i, s := range found {
				red[i] = redact(s)
			}
			t.Errorf("%s: %d secrets printed: %v", name, len(found), red)
		}
		lines, n, err := NonJSONLines(w.LogPath, 5)
		if err != nil {
			t.Errorf("%s: %v", name, err)
		}
		if n > 0 {
			r.NonJSON += n
			t.Errorf("%s: %d log lines are not JSON, e.g.\n  %s", name, n, strings.Join(lines, "\n  "))
		}
		for _, x := range w.UnexpectedExits() {
			t.Errorf("%s", x)
		}
	}
	if h.NATS != nil {
		for _, x := range h.NATS.UnexpectedExits() {
			t.Errorf("%s", x)
		}
	}
	r.Notes = h.notes
	r.Log(t)
	return r
}

func (h *Harness) limit(ent string) float64 {
	if l, ok := h.Rates[ent]; ok {
		return l
	}
	return h.Opts.Rate
}

type problem struct{ kind, detail string }

// eventProblems lists what a terminal event lacks.
func eventProblems(e Event, c Command, defaultEnterprise string) []problem {
	var out []problem
	for _, k := range []string{"commandId", "enterpriseId", "meetingRoomNumber", "attempts", "occurredAt"} {
		if _, ok := e.Fields[k]; !ok {
			out = append(out, problem{"no " + k, ""})
		}
	}
	if _, ok := e.Fields["attempts"].(float64); !ok && e.Fields["attempts"] != nil {
		out = append(out, problem{"attempts not a number", fmt.Sprintf("%T", e.Fields["attempts"])})
	}
	if s, _ := e.Fields["occurredAt"].(string); s != "" {
		if _, err := time.Parse(time.RFC3339Nano, s); err != nil {
			out = append(out, problem{"occurredAt not RFC 3339", s})
		}
	}
	if e.Outcome() != "created" {
		if _, ok := e.Fields["command"]; !ok {
			out = append(out, problem{"no command", ""})
		}
	}
	if c.Meeting != "" && e.Fields["meetingRoomNumber"] != c.Meeting {
		out = append(out, problem{"meetingRoomNumber is not the command's",
			fmt.Sprintf("%q, the command gave %q", e.Fields["meetingRoomNumber"], c.Meeting)})
	}
	want := c.Enterprise
	if want == "" {
		want = defaultEnterprise
	}
	if e.Fields["enterpriseId"] != want {
		out = append(out, problem{"enterpriseId is not the command's (or the default tenant)",
			fmt.Sprintf("%q, want %q", e.Fields["enterpriseId"], want)})
	}
	return out
}

// grouped collects violations by kind.
type grouped struct {
	order []string
	by    map[string][]string
}

func newGrouped() *grouped { return &grouped{by: map[string][]string{}} }

func (g *grouped) add(kind, example string) {
	if _, ok := g.by[kind]; !ok {
		g.order = append(g.order, kind)
	}
	g.by[kind] = append(g.by[kind], example)
}

// report makes one test error per kind, with the count and three examples.
func (g *grouped) report(t interface{ Errorf(string, ...any) }) {
	for _, kind := range g.order {
		ex := g.by[kind]
		t.Errorf("%d commands: %s; e.g.\n    %s", len(ex), kind, strings.Join(ex[:min(3, len(ex))], "\n    "))
	}
}

// ResendsExpected says why a success may be sent again in this scenario: a
// worker that received a 200 died or lost NATS before it could record it, so
// for the cluster the outcome is unknown. Such a resend must then be
// reconciled (66684 → created), not reported as a failure.
func (h *Harness) ResendsExpected(why string) { h.resendsExpected = why }

// GuardLearns says the network between workers and API varies the delay more
// than the guard's floor allows for (why): the check then holds the workers'
// sending to the rate, and allows the API at most 1% of 429 answers while the
// guard learns, instead of holding every second at the API to the rate.
func (h *Harness) GuardLearns(why string) { h.learning = why }

// awaitSettled waits until the workers' consumer has nothing pending and
// nothing unacknowledged, and says what is left when it does not in time.
func (h *Harness) awaitSettled(within time.Duration) string {
	var left string
	until(within, 200*time.Millisecond, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		cons, err := h.JS.Consumer(ctx, StreamCommands, ConsumerWorkers)
		if err != nil {
			left = err.Error()
			return false
		}
		info, err := cons.Info(ctx)
		if err != nil {
			left = err.Error()
			return false
		}
		left = fmt.Sprintf("%d pending, %d unacknowledged", info.NumPending, info.NumAckPending)
		return info.NumPending == 0 && info.NumAckPending == 0
	})
	if strings.HasPrefix(left, "0 pending, 0 unacknowledged") {
		return ""
	}
	return left
}

// resentAfterSuccess lists the commands (each the only one of its meeting)
// whose meeting got another dynamicGroup call after a worker had received a
// 200 for it: a success sent again. (A 200 the proxy replaced with a gateway
// error or a reset is an unknown outcome to the worker, and its retry is
// allowed.)
func (h *Harness) resentAfterSuccess() []string {
	perMeeting := map[string][]string{}
	for _, c := range h.Commands {
		if c.Meeting != "" {
			perMeeting[c.Meeting] = append(perMeeting[c.Meeting], c.ID)
		}
	}
	arrivals := h.Proxy.Arrivals()
	sort.Slice(arrivals, func(i, j int) bool { return arrivals[i].Sent.Before(arrivals[j].Sent) })
	succeeded := map[string]bool{}
	again := map[string]int{}
	for _, a := range arrivals {
		if len(perMeeting[a.Meeting]) != 1 {
			continue
		}
		if succeeded[a.Meeting] {
			again[a.Meeting]++
		}
		if a.Forwarded && a.Answer == http.StatusOK {
			succeeded[a.Meeting] = true
		}
	}
	var out []string
	for m, n := range again {
		out = append(out, fmt.Sprintf("%s (%d more calls)", perMeeting[m][0], n))
	}
	sort.Strings(out)
	return out
}

// report gathers the figures.
func (h *Harness) report() *Report {
	st := h.Sandbox.Stats()
	r := &Report{Name: h.T.Name(), Commands: len(h.Commands), Failed: map[string]int{}, MaxWindow: map[string]int{},
		SandboxWindow: map[string]int{}, SentWindow: map[string]int{}, Limits: map[string]float64{}, APICalls: map[string]int{}, Answers: st.ByAnswer,
		Injected: h.Proxy.Injected(), TokenIssues: st.TokenIssues, DuplicateCreates: st.DuplicateCreates,
		CreatedBy: map[string]int{}, ResentAfterSuccess: h.resentAfterSuccess()}
	for _, o := range h.Proxy.Outages() {
		r.Outages = append(r.Outages, fmt.Sprintf("%v outage: %d calls during it %s", o.Until.Sub(o.From), o.Total(), kv(o.Calls())))
	}
	byCmd := h.Events.ByCommand()
	var lastEnd, lastCreated time.Time
	for _, c := range h.Commands {
		for _, e := range byCmd[c.ID] {
			if !e.Terminal() {
				if e.Subject == SubjectWaiting {
					r.Waiting++
				}
				continue
			}
			if e.Stored.After(lastEnd) {
				lastEnd = e.Stored
			}
			if e.Outcome() == "created" {
				r.Created++
				ent, _ := e.Fields["enterpriseId"].(string)
				r.CreatedBy[ent]++
				if e.Fields["reconciled"] == true {
					r.Reconciled++
				}
				if e.Stored.After(lastCreated) {
					lastCreated = e.Stored
				}
			} else {
				r.Failed[strings.TrimPrefix(e.Outcome(), "failed.")]++
			}
			break
		}
	}
	if !lastEnd.IsZero() {
		r.Wall = lastEnd.Sub(h.Started)
	}
	if !lastCreated.IsZero() {
		r.CreatedSpan = lastCreated.Sub(h.Started)
	}
	// The API: the sandbox's arrivals, plus calls the proxy answered itself.
	api := h.Sandbox.DynamicGroupArrivals()
	for ent, ts := range api {
		r.SandboxWindow[ent] = sandbox.MaxInWindow(ts, time.Second)
	}
	sent := map[string][]time.Time{}
	for _, a := range h.Proxy.Arrivals() {
		r.APICalls[a.EnterpriseID]++
		sent[a.EnterpriseID] = append(sent[a.EnterpriseID], a.Sent)
		if !a.Forwarded {
			api[a.EnterpriseID] = append(api[a.EnterpriseID], a.At)
		}
	}
	for ent, ts := range api {
		r.MaxWindow[ent] = sandbox.MaxInWindow(ts, time.Second)
		r.Limits[ent] = h.limit(ent)
	}
	for ent, ts := range sent {
		r.SentWindow[ent] = sandbox.MaxInWindow(ts, time.Second)
	}
	return r
}

func first(s []string, n int) []string {
	sort.Strings(s)
	if len(s) > n {
		return s[:n]
	}
	return s
}

func clip(b []byte, n int) string {
	if len(b) > n {
		return string(b[:n]) + "…"
	}
	return string(b)
}
