// Command tenantbench measures the cluster-wide rate limiter's dispensers as
// the numbers of enterprises and replicas grow. For each step it starts a NATS
// server and 1, 3 or 6 limiter clients (replicas), each in its own process as
// in a deployment (or, with -inprocess, all in this one, on their own
// connections), and waits until every shard has a dispenser. Every client runs callers for every enterprise
// (2 per enterprise per client), each always wanting a grant at the default
// rate (20/s) and guard; a caller records the time Wait returns.
//
// Grant times are taken where the callers receive them, not at the sandbox:
// at 2,000 enterprises that is about 39,000 grants a second, and as many HTTP
// calls to a sandbox on the same host would take the cores the dispensers are
// measured on.
//
// For each step it prints the grants per second over all enterprises and their
// share of the expected enterprises × rate / (1 + guard); the gaps between an
// enterprise's consecutive grants (ideally the spacing, (1 s + guard) / rate
// = 51.25 ms): p50, p99 and the least; the request→grant wait p99; the CPU
// time over wall time (getrusage) of the NATS server's process and of the
// busiest client process (its dispensers, its callers); the most grants any
// enterprise had in a sliding second (the rate, 20, at most), and how many
// enterprises had more; the grants that came too late to be used (see
// worker/ratelimit: asked for again); and the shards taken during the step
// (each after a dispenser stepped down).
//
//	go run ./cmd/tenantbench                                  # about five minutes
//	go run ./cmd/tenantbench -replicas 3 -enterprises 100,2000 -duration 10s
package main

import (
	"bufio"
	"context"
	"encoding/binary"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
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

// logger: the limiter clients' log (-v).
var logger = zerolog.Nop()

func main() {
	list := flag.String("enterprises", "10,100,500,1000,2000,5000,10000", "numbers of enterprises, one step each")
	duration := flag.Duration("duration", 10*time.Second, "measured length of each step (after a 2 s warm-up)")
	replicaList := flag.String("replicas", "1,3,6", "numbers of limiter clients (replicas), each with every step of -enterprises")
	callers := flag.Int("callers", 2, "callers per enterprise per client, each always wanting a grant")
	inProcess := flag.Bool("inprocess", false, "run the NATS server and every client in this process")
	cpuProfile := flag.String("cpuprofile", "", "write a CPU profile of the last step to this file (its first client's, with processes)")
	verbose := flag.Bool("v", false, "log the limiter clients' step-downs and other warnings to stderr")
	child := flag.String("child", "", "internal: run one client against this NATS URL, as told on stdin")
	flag.Parse()
	if *verbose {
		logger = zerolog.New(zerolog.ConsoleWriter{Out: os.Stderr, TimeFormat: "15:04:05.000"}).Level(zerolog.WarnLevel).With().Timestamp().Logger()
	}
	if *child != "" {
		if err := runChild(*child); err != nil {
			fmt.Fprintln(os.Stderr, "tenantbench client:", err)
			os.Exit(1)
		}
		return
	}
	steps, clientSteps := numbers("enterprises", *list), numbers("replicas", *replicaList)
	var results []result
	for ci, clients := range clientSteps {
		for i, n := range steps {
			profile := ""
			if ci == len(clientSteps)-1 && i == len(steps)-1 {
				profile = *cpuProfile
			}
			r, err := step(n, clients, *callers, *duration, profile, *inProcess, *verbose)
			if err != nil {
				fmt.Fprintln(os.Stderr, "tenantbench:", err)
				os.Exit(1)
			}
			fmt.Fprintf(os.Stderr, "done: %d replicas, %d enterprises\n", clients, n)
			results = append(results, r)
		}
	}
	spacing := time.Duration(float64(time.Second+guard) / rate)
	where := "each client in its own process"
	if *inProcess {
		where = "NATS and every client in one process"
	}
	fmt.Printf("%d callers per enterprise per client, rate %.0f/s, guard %v (spacing %v), %v per step, %s\n",
		*callers, rate, guard, spacing, *duration, where)
	tw := tabwriter.NewWriter(os.Stdout, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "replicas\tenterprises\tgrants/s\t% of expected\tgap p50\tgap p99\tmin gap\twait p99\tCPU NATS\tCPU client (most)\tCPU total\tmax in 1 s window\tenterprises over 20\tlate grants unused\tshards taken")
	for _, r := range results {
		expected := float64(r.enterprises) * rate / (1 + guard.Seconds())
		fmt.Fprintf(tw, "%d\t%d\t%.0f\t%.1f%%\t%v\t%v\t%v\t%v\t%.2f\t%.2f\t%.2f\t%d\t%d\t%d\t%d\n", r.clients, r.enterprises, r.perSecond, 100*r.perSecond/expected,
			ms(r.gapP50), ms(r.gapP99), ms(r.minGap), r.waitP99.Round(time.Millisecond), r.natsCores, r.clientCores, r.cores,
			r.maxWindow, r.over, r.stale, r.elections)
	}
	_ = tw.Flush()
}

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
	// cores: CPU over wall time of everything (the one process, or the
	// server's and the clients'); natsCores: the server's process;
	// clientCores: the busiest client process (0 in one process).
	cores, natsCores, clientCores float64
	maxWindow, over               int
	stale                         int64 // grants that came late and were not used
	elections                     int64 // shards taken during the measured time (each after a step-down)
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func enterpriseID(e int) string { return fmt.Sprintf("enterprise-%04d", e) }

// measured is what a client reports of a step: its grant times per
// enterprise and its request→grant waits within [from, to), its CPU time
// and counters over it.
type measured struct {
	times            [][]int64 // per enterprise, Unix nanoseconds
	waits            []int64
	cpu              time.Duration
	stale, elections int64
}

// callersRun runs the client's callers from now until to and measures
// [from, to).
func callersRun(ctx context.Context, lim *ratelimit.Cluster, n, callers int, from, to time.Time) measured {
	m := measured{times: make([][]int64, n)}
	var mu sync.Mutex
	runCtx, stop := context.WithDeadline(ctx, to)
	defer stop()
	var wg sync.WaitGroup
	for e := range n {
		id := enterpriseID(e)
		for range callers {
			wg.Go(func() {
				var times, waits []int64
				for {
					asked := time.Now()
					if lim.Wait(runCtx, id, ratelimit.Live) != nil {
						break
					}
					at := time.Now()
					if at.After(from) && at.Before(to) {
						times = append(times, at.UnixNano())
						waits = append(waits, int64(at.Sub(asked)))
					}
				}
				mu.Lock()
				m.times[e] = append(m.times[e], times...)
				m.waits = append(m.waits, waits...)
				mu.Unlock()
			})
		}
	}
	time.Sleep(time.Until(from))
	cpu0, s0 := cpuTime(), lim.Stats()
	time.Sleep(time.Until(to))
	cpu1, s1 := cpuTime(), lim.Stats()
	m.cpu, m.stale, m.elections = cpu1-cpu0, s1.Stale-s0.Stale, s1.Elections-s0.Elections
	stop()
	wg.Wait()
	return m
}

func step(n, clients, callers int, duration time.Duration, profile string, inProcess, verbose bool) (result, error) {
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
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		return result{}, err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return result{}, err
	}

	var ms []measured
	var from, to time.Time
	begin := func() {
		start := time.Now()
		from, to = start.Add(warmUp), start.Add(warmUp+duration)
	}
	if inProcess {
		var lims []*ratelimit.Cluster
		for i := range clients {
			cnc, err := nats.Connect(srv.ClientURL(), nats.MaxReconnects(-1))
			if err != nil {
				return result{}, err
			}
			defer cnc.Close()
			lim, err := ratelimit.NewCluster(ctx, cnc, ratelimit.Options{Name: fmt.Sprintf("client-%d", i), Log: logger})
			if err != nil {
				return result{}, err
			}
			lims = append(lims, lim)
		}
		if err := awaitSettled(ctx, js, clients); err != nil {
			return result{}, err
		}
		begin()
		profiled := profileDuring(profile, from, to)
		out := make([]measured, clients)
		var wg sync.WaitGroup
		for i, lim := range lims {
			wg.Go(func() { out[i] = callersRun(ctx, lim, n, callers, from, to) })
		}
		wg.Wait()
		profiled()
		res := analyse(out, n, clients, from, to)
		// One process: each client's CPU time is the process's.
		res.cores = out[0].cpu.Seconds() / duration.Seconds()
		res.natsCores, res.clientCores = res.cores, 0
		return res, nil
	}

	// Each client in its own process: started with -child, it connects and
	// joins the election, says "ready", and is told when to run its
	// callers; it answers with its measurements.
	type proc struct {
		cmd   *exec.Cmd
		stdin io.WriteCloser
		out   *bufio.Reader
		file  string
	}
	var procs []*proc
	defer func() {
		for _, p := range procs {
			_ = p.stdin.Close()
			_ = p.cmd.Process.Kill()
			_ = p.cmd.Wait()
		}
	}()
	for i := range clients {
		args := []string{"-child", srv.ClientURL()}
		if verbose {
			args = append(args, "-v")
		}
		cmd := exec.Command(os.Args[0], args...)
		cmd.Stderr = os.Stderr
		stdin, err := cmd.StdinPipe()
		if err != nil {
			return result{}, err
		}
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			return result{}, err
		}
		if err := cmd.Start(); err != nil {
			return result{}, err
		}
		p := &proc{cmd: cmd, stdin: stdin, out: bufio.NewReader(stdout), file: fmt.Sprintf("%s/client-%d", dir, i)}
		procs = append(procs, p)
		fmt.Fprintf(stdin, "join client-%d\n", i)
		if line, err := p.out.ReadString('\n'); err != nil || line != "ready\n" {
			return result{}, fmt.Errorf("client %d: %q %v", i, line, err)
		}
	}
	if err := awaitSettled(ctx, js, clients); err != nil {
		return result{}, err
	}
	begin()
	for i, p := range procs {
		prof := ""
		if i == 0 {
			prof = profile
		}
		fmt.Fprintf(p.stdin, "run %d %d %d %d %s %s\n", n, callers, from.UnixNano(), to.UnixNano(), p.file, strconv.Quote(prof))
	}
	time.Sleep(time.Until(from))
	natsCPU0 := cpuTime()
	time.Sleep(time.Until(to))
	natsCPU := cpuTime() - natsCPU0
	for i, p := range procs {
		line, err := p.out.ReadString('\n')
		if err != nil || line != "done\n" {
			return result{}, fmt.Errorf("client %d: %q %v", i, line, err)
		}
		m, err := readMeasured(p.file)
		if err != nil {
			return result{}, err
		}
		ms = append(ms, m)
	}
	res := analyse(ms, n, clients, from, to)
	res.natsCores = natsCPU.Seconds() / duration.Seconds()
	res.cores = res.natsCores
	for _, m := range ms {
		c := m.cpu.Seconds() / duration.Seconds()
		res.cores += c
		res.clientCores = max(res.clientCores, c)
	}
	return res, nil
}

// profileDuring writes a CPU profile of [from, to) to path (none when
// empty); the function returned waits until it is written.
func profileDuring(path string, from, to time.Time) func() {
	done := make(chan struct{})
	go func() {
		defer close(done)
		if path == "" {
			return
		}
		f, err := os.Create(path)
		if err != nil {
			fmt.Fprintln(os.Stderr, "tenantbench:", err)
			return
		}
		defer f.Close()
		time.Sleep(time.Until(from))
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintln(os.Stderr, "tenantbench:", err)
			return
		}
		time.Sleep(time.Until(to))
		pprof.StopCPUProfile()
	}()
	return func() { <-done }
}

// runChild is one client's process: "join <name>" starts its limiter
// client, "run <enterprises> <callers> <from> <to> <file> <profile>" its
// callers; it writes its measurements to the file and says "done".
func runChild(url string) error {
	in := bufio.NewScanner(os.Stdin)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var lim *ratelimit.Cluster
	for in.Scan() {
		f := strings.Fields(in.Text())
		switch {
		case len(f) == 2 && f[0] == "join":
			nc, err := nats.Connect(url, nats.MaxReconnects(-1))
			if err != nil {
				return err
			}
			defer nc.Close()
			if lim, err = ratelimit.NewCluster(ctx, nc, ratelimit.Options{Name: f[1], Log: logger}); err != nil {
				return err
			}
			fmt.Println("ready")
		case len(f) == 7 && f[0] == "run" && lim != nil:
			var v [4]int64
			for i := range v {
				var err error
				if v[i], err = strconv.ParseInt(f[i+1], 10, 64); err != nil {
					return err
				}
			}
			profile, err := strconv.Unquote(f[6])
			if err != nil {
				return err
			}
			from, to := time.Unix(0, v[2]), time.Unix(0, v[3])
			profiled := profileDuring(profile, from, to)
			m := callersRun(ctx, lim, int(v[0]), int(v[1]), from, to)
			profiled()
			if err := writeMeasured(f[5], m); err != nil {
				return err
			}
			fmt.Println("done")
		default:
			return fmt.Errorf("unexpected %q", in.Text())
		}
	}
	return in.Err()
}

// The measurements' file: cpu, stale, elections, the number of
// enterprises, each one's count and times, the number of waits and the
// waits: little-endian int64s.
func writeMeasured(path string, m measured) error {
	w := []int64{int64(m.cpu), m.stale, m.elections, int64(len(m.times))}
	for _, t := range m.times {
		w = append(w, int64(len(t)))
		w = append(w, t...)
	}
	w = append(w, int64(len(m.waits)))
	w = append(w, m.waits...)
	b := make([]byte, 8*len(w))
	for i, x := range w {
		binary.LittleEndian.PutUint64(b[8*i:], uint64(x))
	}
	return os.WriteFile(path, b, 0o600)
}

func readMeasured(path string) (measured, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return measured{}, err
	}
	next := func() int64 {
		if len(b) < 8 {
			return 0
		}
		x := int64(binary.LittleEndian.Uint64(b))
		b = b[8:]
		return x
	}
	list := func() []int64 {
		out := make([]int64, next())
		for i := range out {
			out[i] = next()
		}
		return out
	}
	m := measured{cpu: time.Duration(next()), stale: next(), elections: next()}
	m.times = make([][]int64, next())
	for i := range m.times {
		m.times[i] = list()
	}
	m.waits = list()
	return m, nil
}

func analyse(ms []measured, n, clients int, from, to time.Time) result {
	duration := to.Sub(from)
	res := result{clients: clients, enterprises: n, minGap: time.Hour}
	var gaps []time.Duration
	var waits []int64
	total := 0
	for e := range n {
		var in []time.Time
		for _, m := range ms {
			for _, at := range m.times[e] {
				in = append(in, time.Unix(0, at))
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
	for _, m := range ms {
		waits = append(waits, m.waits...)
		res.stale += m.stale
		res.elections += m.elections
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
		res.waitP99 = time.Duration(waits[len(waits)*99/100])
	}
	return res
}

// awaitSettled waits until every shard has a dispenser and none holds more
// than its share, as the shards' leases say.
func awaitSettled(ctx context.Context, js jetstream.JetStream, clients int) error {
	quota := (ratelimit.DefaultShards + clients - 1) / clients
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		info, ok, err := ratelimit.Dispenser(ctx, js)
		if err == nil && ok && len(info.Vacant) == 0 && len(info.Dispensers) == clients {
			held, most := 0, 0
			for _, shards := range info.Dispensers {
				held += len(shards)
				most = max(most, len(shards))
			}
			if held == ratelimit.DefaultShards && most <= quota {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no dispenser elected for every shard within a minute")
		}
	}
}
