package e2e

import (
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"
)

// Report is a scenario's figures.
type Report struct {
	Name                         string
	Commands, Ended, Created     int
	Reconciled, Waiting, NonJSON int
	Failed                       map[string]int // by class
	CreatedBy                    map[string]int // by enterprise
	MaxWindow                    map[string]int // at the API, per enterprise
	SandboxWindow                map[string]int // at the sandbox only
	SentWindow                   map[string]int // as the workers sent them (at the proxy, before any delay)
	Limits                       map[string]float64
	APICalls                     map[string]int // dynamicGroup calls per enterprise
	Answers                      map[string]int // the sandbox's answers by kind
	Injected                     map[string]int // the fault proxy's faults by kind
	TokenIssues                  int
	DuplicateCreates             []string
	ResentAfterSuccess           []string // commands called again after a 200
	Wall, CreatedSpan            time.Duration
	Outages                      []string // calls during each outage
	Notes                        []string
}

// Throughput is created commands per second, from the first publish to the
// last created event.
func (r *Report) Throughput() float64 {
	if r.CreatedSpan <= 0 {
		return 0
	}
	return float64(r.Created) / r.CreatedSpan.Seconds()
}

// Log prints the figures as one block.
func (r *Report) Log(t testing.TB) {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "SUMMARY %s: commands %d, ended %d, created %d (reconciled %d), failed %s, waiting events %d\n",
		r.Name, r.Commands, r.Ended, r.Created, r.Reconciled, kv(r.Failed), r.Waiting)
	var win []string
	for _, ent := range sortedKeys(r.MaxWindow) {
		win = append(win, fmt.Sprintf("%s %d at the API (sandbox %d, as sent %d) / limit %g", ent, r.MaxWindow[ent],
			r.SandboxWindow[ent], r.SentWindow[ent], r.Limits[ent]))
	}
	fmt.Fprintf(&b, "  max calls in a sliding second: %s\n", strings.Join(win, "; "))
	fmt.Fprintf(&b, "  API calls %s; answers %s; 429 answers %d; 66620 answers %d; injected %s; tokens issued %d\n",
		kv(r.APICalls), kv(r.Answers), r.Answers["429"], r.Answers["66620"], kv(r.Injected), r.TokenIssues)
	fmt.Fprintf(&b, "  duplicate creates %d; sent again after success %d; non-JSON log lines %d; throughput %.1f created/s; wall %v",
		len(r.DuplicateCreates), len(r.ResentAfterSuccess), r.NonJSON, r.Throughput(), r.Wall.Round(100*time.Millisecond))
	if len(r.CreatedBy) > 1 {
		fmt.Fprintf(&b, "; created by enterprise %s", kv(r.CreatedBy))
	}
	for _, o := range r.Outages {
		fmt.Fprintf(&b, "\n  %s", o)
	}
	for _, n := range r.Notes {
		fmt.Fprintf(&b, "\n  %s", n)
	}
	t.Log(b.String())
}

func kv[V any](m map[string]V) string {
	if len(m) == 0 {
		return "{}"
	}
	parts := make([]string, 0, len(m))
	for _, k := range sortedKeys(m) {
		parts = append(parts, fmt.Sprintf("%s:%v", k, m[k]))
	}
	return "{" + strings.Join(parts, " ") + "}"
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
