// Command tenantbench measures the cluster-wide rate limiter's dispensers as
// the numbers of enterprises and replicas grow. For each step it starts a NATS
// server in this process and 1, 3 or 6 limiter clients (replicas) on their own
// connections, and waits until every shard has a dispenser. Every client runs callers for every enterprise
// (2 per enterprise per client), each always wanting a grant at the default
// rate (20/s) and guard; a caller records the time Wait returns.
//
// Grant times are taken where the callers receive them, not at the sandbox:
// at 2,000 enterprises that is about 39,000 grants a second, and as many HTTP
// calls to a sandbox in the same process would take the cores the dispenser is
// measured on.
//
// For each step it prints the grants per second over all enterprises and their
// share of the expected enterprises × rate / (1 + guard); the gaps between an
// enterprise's consecutive grants (ideally the spacing, (1 s + guard) / rate
// = 51.25 ms): p50, p99 and the least; the request→grant wait p99; the process's
// CPU time over wall time (getrusage: the dispenser, but also the NATS server,
// the 3 clients and the callers); and the most grants any enterprise had in a
// sliding second (the rate, 20, at most), and how many enterprises had more.
//
//	go run ./cmd/tenantbench                                  # about six minutes
//	go run ./cmd/tenantbench -replicas 3 -enterprises 100,2000 -duration 10s
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/xygroup/xygroup/worker/embedded"
	"github.com/xygroup/xygroup/worker/ratelimit"
	"github.com/xygroup/xygroup/xylink/sandbox"
)

const (
	rate   = 20.0
	guard  = 25 * time.Millisecond // the default
	warmUp = 2 * time.Second       // not measured: election, first requests
)

func main() {
	list := flag.String("enterprises", "10,100,500,1000,2000,5000,10000", "numbers of enterprises, one step each")
	duration := flag.Duration("duration", 10*time.Second, "measured length of each step (after a 2 s warm-up)")
	replicaList := flag.String("replicas", "1,3,6", "numbers of limiter clients (replicas), each with every step of -enterprises")
	callers := flag.Int("callers", 2, "callers per enterprise per client, each always wanting a grant")
	cpuProfile := flag.String("cpuprofile", "", "write a CPU profile of the last step to this file")
	verbose := flag.Bool("v", false, "log the limiter clients' step-downs and other warnings to stderr")
	flag.Parse()
	if *verbose {
		logger = zerolog.New(zerolog.ConsoleWriter{Out: os.Stderr, TimeFormat: "15:04:05.000"}).Level(zerolog.WarnLevel).With().Timestamp().Logger()
	}
	steps, clientSteps := numbers("enterprises", *list), numbers("replicas", *replicaList)
	var results []result
	for ci, clients := range clientSteps {
		for i, n := range steps {
			profile := ""
			if ci == len(clientSteps)-1 && i == len(steps)-1 {
				profile = *cpuProfile
			}
			r, err := step(n, clients, *callers, *duration, profile)
			if err != nil {
				fmt.Fprintln(os.Stderr, "tenantbench:", err)
				os.Exit(1)
			}
			fmt.Fprintf(os.Stderr, "done: %d replicas, %d enterprises\n", clients, n)
			results = append(results, r)
		}
	}
	spacing := time.Duration(float64(time.Second+guard) / rate)
	fmt.Printf("%d callers per enterprise per client, rate %.0f/s, guard %v (spacing %v), %v per step\n",
		*callers, rate, guard, spacing, *duration)
	tw := tabwriter.NewWriter(os.Stdout, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "replicas\tenterprises\tgrants/s\t% of expected\tgap p50\tgap p99\tmin gap\twait p99\tCPU (cores)\tmax in 1 s window\tenterprises over 20\tlate grants unused\tshards taken")
	for _, r := range results {
		expected := float64(r.enterprises) * rate / (1 + guard.Seconds())
		fmt.Fprintf(tw, "%d\t%d\t%.0f\t%.1f%%\t%v\t%v\t%v\t%v\t%.2f\t%d\t%d\t%d\t%d\n", r.clients, r.enterprises, r.perSecond, 100*r.perSecond/expected,
			ms(r.gapP50), ms(r.gapP99), ms(r.minGap), r.waitP99.Round(time.Millisecond), r.cores, r.maxWindow, r.over, r.stale, r.elections)
	}
	_ = tw.Flush()
}

// logger: the limiter clients' log (-v).
var logger = zerolog.Nop()

func numbers(name, list string) []int {
	var out []int
	for _, f := range strings.Split(list, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			fmt.Fprintf(os.Stderr, "tenantbench: bad -%s %q\n", name, list)
			os.Exit(2)
		}
		out = append(out, n)
	}
	return out
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond)) }

type result struct {
	clients, enterprises            int
	perSecond                       float64
	gapP50, gapP99, minGap, waitP99 time.Duration
	cores                           float64
	maxWindow, over                 int
	stale                           int64 // grants that came late and were not used
	elections                       int64 // shards taken during the measured time (each after a step-down)
}

// tenant is one enterprise's grant times.
type tenant struct {
	mu    sync.Mutex
	times []time.Time
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func step(n, clients, callers int, duration time.Duration, profile string) (result, error) {
	dir, err := os.MkdirTemp("", "tenantbench")
	if err != nil {
		return result{}, err
	}
	defer os.RemoveAll(dir)
	srv, err := embedded.Start(embedded.Config{Name: "tenantbench", Listen: "127.0.0.1:0", StoreDir: dir})
	if err != nil {
		return result{}, err
	}
	defer srv.Stop()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var lims []*ratelimit.Cluster
	for i := range clients {
		nc, err := nats.Connect(srv.ClientURL(), nats.MaxReconnects(-1))
		if err != nil {
			return result{}, err
		}
		defer nc.Close()
		lim, err := ratelimit.NewCluster(ctx, nc, ratelimit.Options{Name: fmt.Sprintf("client-%d", i), Log: logger})
		if err != nil {
			return result{}, err
		}
		lims = append(lims, lim)
	}
	// Wait until every shard has a dispenser, spread over the clients.
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if settled(lims) {
			break
		}
		if time.Now().After(deadline) {
			return result{}, fmt.Errorf("no dispenser elected")
		}
	}

	tenants := make([]*tenant, n)
	ids := make([]string, n)
	for e := range n {
		tenants[e] = &tenant{times: make([]time.Time, 0, int(rate*(duration+warmUp+time.Second).Seconds()))}
		ids[e] = fmt.Sprintf("enterprise-%04d", e)
	}
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	start := time.Now()
	from, to := start.Add(warmUp), start.Add(warmUp+duration)
	var waitMu sync.Mutex
	var waits []time.Duration
	var wg sync.WaitGroup
	for _, lim := range lims {
		for e := range n {
			for range callers {
				wg.Go(func() {
					var mine []time.Duration
					defer func() {
						waitMu.Lock()
						waits = append(waits, mine...)
						waitMu.Unlock()
					}()
					for {
						asked := time.Now()
						if lim.Wait(runCtx, ids[e], ratelimit.Live) != nil {
							return
						}
						at := time.Now()
						if at.After(from) && at.Before(to) {
							mine = append(mine, at.Sub(asked))
						}
						t := tenants[e]
						t.mu.Lock()
						t.times = append(t.times, at)
						t.mu.Unlock()
					}
				})
			}
		}
	}
	staleGrants := func() (n int64) {
		for _, l := range lims {
			n += l.Stats().Stale
		}
		return n
	}
	elections := func() (n int64) {
		for _, l := range lims {
			n += l.Stats().Elections
		}
		return n
	}
	time.Sleep(time.Until(from))
	cpu0 := cpuTime()
	stale0, elections0 := staleGrants(), elections()
	if profile != "" {
		f, err := os.Create(profile)
		if err != nil {
			return result{}, err
		}
		defer f.Close()
		_ = pprof.StartCPUProfile(f)
	}
	time.Sleep(time.Until(to))
	cpu := cpuTime() - cpu0
	stale, elected := staleGrants()-stale0, elections()-elections0
	if profile != "" {
		pprof.StopCPUProfile()
	}
	stop()
	wg.Wait()

	res := result{clients: clients, enterprises: n, cores: cpu.Seconds() / duration.Seconds(), minGap: time.Hour, stale: stale, elections: elected}
	var gaps []time.Duration
	total := 0
	for _, t := range tenants {
		var in []time.Time
		for _, at := range t.times {
			if at.After(from) && at.Before(to) {
				in = append(in, at)
			}
		}
		slices.SortFunc(in, func(a, b time.Time) int { return a.Compare(b) })
		total += len(in)
		for i := 1; i < len(in); i++ {
			g := in[i].Sub(in[i-1])
			gaps = append(gaps, g)
			res.minGap = min(res.minGap, g)
		}
		w := sandbox.MaxInWindow(in, time.Second)
		res.maxWindow = max(res.maxWindow, w)
		if w > int(rate) {
			res.over++
		}
	}
	res.perSecond = float64(total) / duration.Seconds()
	if len(gaps) > 0 {
		slices.Sort(gaps)
		res.gapP50, res.gapP99 = gaps[len(gaps)/2], gaps[len(gaps)*99/100]
	} else {
		res.minGap = 0
	}
	if len(waits) > 0 {
		slices.Sort(waits)
		res.waitP99 = waits[len(waits)*99/100]
	}
	return res, nil
}

// settled: every shard is held, none by a client holding more than its share.
func settled(lims []*ratelimit.Cluster) bool {
	held, most := 0, 0
	for _, l := range lims {
		n := l.Stats().Shards
		held += n
		most = max(most, n)
	}
	return held == ratelimit.DefaultShards && most <= (ratelimit.DefaultShards+len(lims)-1)/len(lims)
}
