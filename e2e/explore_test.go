package e2e

import (
	"flag"
	"fmt"
	mrand "math/rand/v2"
	"strings"
	"testing"
	"time"
)

var (
	exploreSeed = flag.Uint64("seed", 0, "TestExplore: run this one seed (its schedule exactly; with -long, a seed that -explore drew)")
	exploreFor  = flag.Duration("explore", 0, "TestExplore: run fresh seeds for this long, with a summary line per seed")
)

// shortSeeds are the short profile's seeds: together they draw kills, SIGTERMs,
// API faults of several kinds, cancels of both kinds, new plans and replays.
var shortSeeds = []uint64{1, 2, 3}

// TestExplore draws a random schedule from a seed (bursts of commands for many
// meetings and three tenants, cancels, replays, republishes, and a nemesis:
// workers killed and stopped, NATS nodes killed, API faults), runs it against
// the real binaries and checks the contract over the recorded history
// (explore_check.go). Without flags it runs the short profile's seeds; -seed N
// runs one seed again; -explore 1h runs fresh seeds for an hour.
func TestExplore(t *testing.T) {
	start := time.Now()
	type line struct {
		seed                    uint64
		ops, faults, cmds, viol int
		byRule                  map[int]int
		byKind                  map[string]int
		took                    time.Duration
	}
	var lines []line
	runSeed := func(seed uint64, p exploreProfile) {
		repro := fmt.Sprintf("go test ./e2e -run 'TestExplore$' -seed %d -v", seed)
		if p == longProfile {
			repro += " -long"
		}
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
			s := generate(seed, p)
			ops, faults, cmds := s.counts()
			from := time.Now()
			c := exploreSeedRun(t, s, repro)
			l := line{seed: seed, ops: ops, faults: faults, cmds: cmds, viol: len(c.Violations), byRule: c.ByRule, byKind: c.ByKind, took: time.Since(from)}
			lines = append(lines, l)
			t.Logf("EXPLORE seed %d: operations %d, faults %d, commands %d (stored %d, refused %d), violations %d %s %s, %v",
				seed, ops, faults, cmds, c.Commands, c.Refused, l.viol, ruleCounts(c.ByRule), kv(c.ByKind), l.took.Round(time.Second))
		})
	}
	switch {
	case *exploreSeed != 0:
		p := shortProfile
		if *long || *exploreFor > 0 {
			p = longProfile
		}
		runSeed(*exploreSeed, p)
	case *exploreFor > 0:
		for time.Since(start) < *exploreFor {
			runSeed(mrand.Uint64()%1_000_000+1000, longProfile)
		}
	default:
		for _, seed := range shortSeeds {
			runSeed(seed, shortProfile)
		}
	}
	total := line{byRule: map[int]int{}, byKind: map[string]int{}}
	for _, l := range lines {
		t.Logf("EXPLORE seed %-7d operations %3d faults %2d commands %4d violations %3d %s %s", l.seed, l.ops, l.faults, l.cmds, l.viol,
			ruleCounts(l.byRule), kv(l.byKind))
		total.ops, total.faults, total.cmds, total.viol = total.ops+l.ops, total.faults+l.faults, total.cmds+l.cmds, total.viol+l.viol
		for r, n := range l.byRule {
			total.byRule[r] += n
		}
		for k, n := range l.byKind {
			total.byKind[k] += n
		}
	}
	t.Logf("EXPLORE total: %d seeds, operations %d, faults %d, commands %d, violations %d %s %s, in %v",
		len(lines), total.ops, total.faults, total.cmds, total.viol, ruleCounts(total.byRule), kv(total.byKind), time.Since(start).Round(time.Second))
}

// exploreSeedRun runs one schedule and reports its violations as test errors.
func exploreSeedRun(t *testing.T, s *exploreSchedule, repro string) *checked {
	t.Log(s.Describe())
	h := New(t, exploreOptions(s))
	x := &explorer{t: t, h: h, s: s, hist: &history{}}
	x.run()
	x.settle(3 * time.Minute)
	c := x.check()
	c.Report.Log(t)
	if len(c.Violations) == 0 {
		return c
	}
	const shown = 4 // per rule, with their history
	per := map[int]int{}
	for _, v := range c.Violations {
		per[v.Rule]++
		if per[v.Rule] > shown {
			continue
		}
		var b strings.Builder
		fmt.Fprintf(&b, "seed %d, rule %d (%s) [%s]: %s: %s", s.Seed, v.Rule, exploreRules[v.Rule], v.Kind, orDash(v.Command), v.What)
		if v.Command != "" {
			for _, l := range c.History(v.Command) {
				b.WriteString("\n      " + l)
			}
		}
		t.Error(b.String())
	}
	for r, n := range per {
		if n > shown {
			t.Errorf("seed %d, rule %d: %d more violations", s.Seed, r, n-shown)
		}
	}
	t.Errorf("seed %d: %d violations %s; reproduce with: %s", s.Seed, len(c.Violations), ruleCounts(c.ByRule), repro)
	return c
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func ruleCounts(m map[int]int) string {
	if len(m) == 0 {
		return "{}"
	}
	var parts []string
	for r := range exploreRules {
		if m[r] > 0 {
			parts = append(parts, fmt.Sprintf("rule%d:%d", r, m[r]))
		}
	}
	return "{" + strings.Join(parts, " ") + "}"
}

// A seed's schedule is the same from draw to draw, and seeds differ.
func TestExploreScheduleIsTheSeeds(t *testing.T) {
	for _, p := range []exploreProfile{shortProfile, longProfile} {
		for _, seed := range append(shortSeeds, 12345) {
			a, b := generate(seed, p).Describe(), generate(seed, p).Describe()
			if a != b {
				t.Errorf("seed %d drew two schedules:\n%s\n%s", seed, a, b)
			}
			if c := generate(seed+1, p).Describe(); c == a {
				t.Errorf("seeds %d and %d drew the same schedule", seed, seed+1)
			}
		}
	}
	if testing.Verbose() {
		for _, seed := range shortSeeds {
			t.Log(generate(seed, shortProfile).Describe())
		}
	}
}
