package e2e

import (
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"flag"
	"fmt"
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/xygroup/xygroup/xylink/sandbox"
)

var (
	manyTenants   = flag.Int("tenants", 0, "TestManyTenants: tenants saturated at once (0: the scenario is skipped)")
	tenantBacklog = flag.Int("tenant-backlog", 0, "TestManyTenants: commands per tenant (0: 400)")
	tenantSlots   = flag.Int("tenant-concurrency", 0, "TestManyTenants: the workers' XYGROUP_CONCURRENCY (0: the default)")
)

// Tens of tenants, each at 20 requests/s with a backlog of its own, published
// interleaved: all saturate their rate at once through three worker processes
// and a three-node cluster. Each tenant must keep 95% of its rate at the API,
// no sliding second above its rate, no 429. The figures per tenant are noted,
// with the CPU the processes used: when the machine cannot carry N × 20/s the
// shortfall shows as a flat sum shared evenly and busy cores.
//
// It runs only with -tenants N: what a two-core machine carries depends on
// what else runs on it (see the README's figures).
func TestManyTenants(t *testing.T) {
	knownFailure(t)
	n := *manyTenants
	if n == 0 {
		t.Skip("runs with -tenants N")
	}
	backlog := *tenantBacklog
	if backlog == 0 {
		backlog = 400
	}
	tenants := make([]Tenant, n)
	for i := range tenants {
		sum := sha256.Sum256(fmt.Appendf(nil, "e2e-many-tenants-%d", i))
		tenants[i] = Tenant{ID: fmt.Sprintf("e2e-mt-%02d", i), Token: "e2e-token-mt-" + hex.EncodeToString(sum[:9]), Rate: 20}
	}
	env := map[string]string{}
	if *tenantSlots > 0 {
		env["XYGROUP_CONCURRENCY"] = strconv.Itoa(*tenantSlots)
	}
	h := New(t, Options{Nodes: 3, Workers: 3, Tenants: tenants, Seed: 61, WorkerEnv: env})
	per := make([][]Command, n)
	for i, tn := range tenants {
		per[i] = Commands("many-"+tn.ID, tn.ID, backlog)
	}
	var cmds []Command
	for k := range backlog { // interleaved, as a scheduler would publish
		for i := range tenants {
			cmds = append(cmds, per[i][k])
		}
	}

	cpu0 := h.cpuTimes()
	start := time.Now()
	h.publishFast(cmds)
	t.Logf("published %d commands (%d tenants × %d) in %v", len(cmds), n, backlog, time.Since(start).Round(10*time.Millisecond))
	// At the rate, the backlog takes backlog/20 s; give a machine that carries
	// a fraction of it room, and fail on a stall (AwaitEnded's own timeout).
	h.Events.AwaitEnded(IDs(cmds), time.Duration(backlog)*time.Second/2+5*time.Minute)
	cpu1 := h.cpuTimes()
	metrics := h.workerMetrics("xygroup_limiter_grants_total", "xygroup_lane_moves_total", "xygroup_retries_total",
		"xygroup_limiter_wait_seconds_sum", "xygroup_limiter_wait_seconds_count")

	arrivals := h.Proxy.Arrivals()
	var first, last time.Time
	for _, a := range arrivals {
		if first.IsZero() || a.Sent.Before(first) {
			first = a.Sent
		}
		if a.Sent.After(last) {
			last = a.Sent
		}
	}
	own := 20 / (1 + SuiteRateGuard.Seconds())
	var lines []string
	total, least, most := 0, 0.0, 0.0
	for i, tn := range tenants {
		var at []time.Time
		created, refused, calls := 0, 0, 0
		end := first
		for _, a := range arrivals {
			if a.EnterpriseID != tn.ID {
				continue
			}
			calls++
			at = append(at, a.At)
			switch {
			case a.Answer == http.StatusTooManyRequests:
				refused++
			case a.Forwarded && a.Answer == http.StatusOK:
				created++
				if a.Sent.After(end) {
					end = a.Sent
				}
			}
		}
		total += created
		// Over its backlog: from the first request the workers sent (of any
		// tenant) to the tenant's last success, as in TestTenantRates.
		got := rate(created-1, end.Sub(first))
		share := 100 * got / own
		if i == 0 || share < least {
			least = share
		}
		most = max(most, share)
		win := sandbox.MaxInWindow(at, time.Second)
		lines = append(lines, fmt.Sprintf("%-10s %9d %8d %6d %9.2f %7.1f%% %8v %6d %5d", tn.ID, len(per[i]), created, calls, got,
			share, end.Sub(first).Round(100*time.Millisecond), win, refused))
		if created != len(per[i]) {
			t.Errorf("tenant %s: %d successes at the API for %d commands", tn.ID, created, len(per[i]))
		}
		if win > 20 {
			t.Errorf("tenant %s: %d requests in one sliding second at the API, rate 20", tn.ID, win)
		}
		if refused > 0 {
			t.Errorf("tenant %s: %d requests answered 429", tn.ID, refused)
		}
		if got < 0.95*own {
			t.Errorf("tenant %s kept %.2f created/s of its %.2f/s (%.1f%%), less than 95%%", tn.ID, got, own, share)
		}
	}
	span := last.Sub(first)
	// The sum over time: a machine that cannot carry N × 20/s shows a flat
	// sum from the start, not a slow start.
	buckets := make([]int, int(span/(5*time.Second))+1)
	for _, a := range arrivals {
		if a.Forwarded && a.Answer == http.StatusOK {
			buckets[int(a.Sent.Sub(first)/(5*time.Second))]++
		}
	}
	var timeline []string
	for _, b := range buckets {
		timeline = append(timeline, fmt.Sprintf("%.0f", float64(b)/5))
	}
	h.Note("MANY TENANTS: %d tenants × %d commands at 20/s each (%.2f/s with the guard), 3 workers (concurrency %s), 3 NATS nodes; per tenant:\n"+
		"    %-10s %9s %8s %6s %9s %8s %8s %6s %5s\n    %s",
		n, backlog, own, cmp.Or(env["XYGROUP_CONCURRENCY"], "default"), "tenant", "commands", "created", "calls", "created/s", "of rate", "span", "max/s", "429",
		strings.Join(lines, "\n    "))
	h.Note("MANY TENANTS: sum %.1f created/s over %v (%.0f%% of %d × %.2f); shares from %.1f%% to %.1f%%", rate(total-1, span),
		span.Round(100*time.Millisecond), 100*rate(total-1, span)/(float64(n)*own), n, own, least, most)
	h.Note("MANY TENANTS: created/s of all tenants in each 5 s from the first request (the last one partial): %s",
		strings.Join(timeline, " "))
	waits := []string{}
	for k, v := range metrics {
		if strings.HasPrefix(k, "xygroup_limiter_wait_seconds_sum") {
			prio := strings.TrimPrefix(k, "xygroup_limiter_wait_seconds_sum")
			if c := metrics["xygroup_limiter_wait_seconds_count"+prio]; c > 0 {
				waits = append(waits, fmt.Sprintf("%s %.0f ms over %.0f", prio, 1000*v/c, c))
			}
		}
	}
	var retries []string
	for k, v := range metrics {
		if r, ok := strings.CutPrefix(k, "xygroup_retries_total{"); ok {
			retries = append(retries, fmt.Sprintf("%s %.0f", strings.TrimSuffix(r, "}"), v))
		}
	}
	sort.Strings(retries)
	h.Note("MANY TENANTS: the workers' metrics summed: grants %.0f for %d API calls, moved to lanes %.0f, retries %.0f %v; mean wait for a grant %s",
		metrics["xygroup_limiter_grants_total"], len(arrivals), metrics["xygroup_lane_moves_total"], metrics["xygroup_retries_total"],
		retries, strings.Join(waits, ", "))
	h.Note("MANY TENANTS: CPU while the backlog drained (%v): %s", cpu1.wall.Sub(cpu0.wall).Round(100*time.Millisecond),
		cpu1.since(cpu0))
	h.Check(time.Minute)
}

// publishFast publishes the commands asynchronously (acknowledged, with
// Nats-Msg-Id = commandId), so that every tenant's backlog is in the stream
// well before the workers could drain it; a command whose acknowledgement
// failed is published again synchronously (the stream dedupes).
func (h *Harness) publishFast(cmds []Command) {
	h.T.Helper()
	if h.Started.IsZero() {
		h.Started = time.Now()
	}
	h.Commands = append(h.Commands, cmds...)
	const window = 2000
	var retry []Command
	for k := 0; k < len(cmds); k += window {
		batch := cmds[k:min(k+window, len(cmds))]
		acks := make([]<-chan error, len(batch))
		for i, c := range batch {
			msg := &nats.Msg{Subject: SubjectCreate, Data: c.Payload, Header: nats.Header{}}
			msg.Header.Set(nats.MsgIdHdr, c.ID)
			f, err := h.JS.PublishMsgAsync(msg)
			if err != nil {
				retry = append(retry, c)
				continue
			}
			ch := make(chan error, 1)
			acks[i] = ch
			go func() {
				select {
				case <-f.Ok():
					ch <- nil
				case err := <-f.Err():
					ch <- err
				}
			}()
		}
		for i, ch := range acks {
			if ch != nil && <-ch != nil {
				retry = append(retry, batch[i])
			}
		}
	}
	for _, c := range retry {
		if err := h.Pub.Publish(c, time.Minute); err != nil {
			h.T.Fatalf("publish %s: %v", c.ID, err)
		}
	}
}

// cpuSample is the CPU time the scenario's processes used so far: each
// worker, each NATS node, this test process (sandbox, fault proxy, publisher
// and event reader), and the whole machine's busy and total time.
type cpuSample struct {
	wall        time.Time
	procs       map[string]time.Duration
	busy, total time.Duration
}

func (h *Harness) cpuTimes() cpuSample {
	s := cpuSample{wall: time.Now(), procs: map[string]time.Duration{}}
	for _, w := range h.Workers {
		s.procs[w.Name] = procCPU(w.Pid())
	}
	if h.NATS != nil {
		for _, node := range h.NATS.Nodes {
			s.procs[node.Process.Name] = procCPU(node.Pid())
		}
	}
	s.procs["test (sandbox, proxy)"] = procCPU(os.Getpid())
	s.busy, s.total = machineCPU()
	return s
}

// since says how many cores each process used between two samples.
func (s cpuSample) since(before cpuSample) string {
	wall := s.wall.Sub(before.wall).Seconds()
	if wall <= 0 {
		return "no time passed"
	}
	var parts []string
	sum := 0.0
	for _, name := range sortedKeys(s.procs) {
		c := (s.procs[name] - before.procs[name]).Seconds() / wall
		sum += c
		parts = append(parts, fmt.Sprintf("%s %.2f", name, c))
	}
	out := fmt.Sprintf("cores used: %s; together %.2f", strings.Join(parts, ", "), sum)
	if total := (s.total - before.total).Seconds(); total > 0 {
		cores := total / wall
		busy := (s.busy - before.busy).Seconds() / wall
		out += fmt.Sprintf("; the machine: %.2f of %.0f cores busy (%.0f%%, other work included)", busy, cores, 100*busy/cores)
	}
	return out
}

// procCPU is a process's user and system time from /proc (0 where there is none).
func procCPU(pid int) time.Duration {
	if pid == 0 {
		return 0
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// The fields after the command name, which is in parentheses and may hold spaces.
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 13 {
		return 0
	}
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	return ticks(utime + stime)
}

// machineCPU is the busy and total time of all cores from /proc/stat.
func machineCPU() (busy, total time.Duration) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 5 || f[0] != "cpu" {
		return 0, 0
	}
	var sum, idle int64
	for i, v := range f[1:] {
		x, _ := strconv.ParseInt(v, 10, 64)
		if i >= 8 { // guest time is counted in user time already
			break
		}
		sum += x
		if i == 3 || i == 4 { // idle, iowait
			idle += x
		}
	}
	return ticks(sum - idle), ticks(sum)
}

// ticks converts clock ticks (USER_HZ, 100 on Linux) to a duration.
func ticks(n int64) time.Duration { return time.Duration(n) * 10 * time.Millisecond }

// workerMetrics sums the named series over the running workers' /metrics:
// by name alone, and by name and labels.
func (h *Harness) workerMetrics(names ...string) map[string]float64 {
	out := map[string]float64{}
	for _, w := range h.Workers {
		code, body := w.Page("/metrics")
		if code != http.StatusOK {
			continue
		}
		for _, line := range strings.Split(body, "\n") {
			if strings.HasPrefix(line, "#") {
				continue
			}
			series, value, ok := strings.Cut(line, " ")
			if !ok {
				continue
			}
			name, labels, _ := strings.Cut(series, "{")
			for _, want := range names {
				if name != want {
					continue
				}
				v, err := strconv.ParseFloat(value, 64)
				if err != nil {
					continue
				}
				out[name] += v
				if labels != "" {
					out[name+"{"+labels] += v
				}
			}
		}
	}
	return out
}
