// Command limitbench measures the cluster-wide rate limiter where it matters: at
// the API. It starts a 3-node NATS JetStream cluster and the XYLink sandbox in
// this process, runs 1, 3 and 10 limiter clients (replicas) on their own
// connections spread over the nodes, with clock offsets of up to ±25 ms, shuts
// one node down mid-run, and sends every granted call to the sandbox, which
// records arrival times. For each run it prints the largest number of requests in
// any sliding second at the sandbox, the sustained rate, the grant wait (p50,
// p99) and the NATS operations per grant; and the same for a per-replica
// rate.NewLimiter(20, 1). Last, the grant wait of live commands while a replay
// saturates the budget.
//
//	go run ./cmd/limitbench            # about three minutes
//	go run ./cmd/limitbench -duration 10s -clients 3
package main

import (
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/xygroup/xygroup/worker/embedded"
	"github.com/xygroup/xygroup/worker/ratelimit"
	"github.com/xygroup/xygroup/xylink"
	"github.com/xygroup/xygroup/xylink/sandbox"
)

func main() {
	duration := flag.Duration("duration", 20*time.Second, "length of each run")
	clients := flag.String("clients", "1,3,10", "numbers of limiter clients (replicas) to run")
	callers := flag.Int("callers", 4, "concurrent callers per client, each always wanting a grant")
	skew := flag.Duration("skew", 25*time.Millisecond, "clock offsets are drawn from ±skew")
	flag.Parse()
	if err := run(*duration, *clients, *callers, *skew); err != nil {
		fmt.Fprintln(os.Stderr, "limitbench:", err)
		os.Exit(1)
	}
}

type result struct {
	name       string
	maxWindow  int
	rate       float64
	p50, p99   time.Duration
	opsPer     float64
	answers429 int
}

func run(duration time.Duration, clientList string, callers int, skew time.Duration) error {
	sb, err := sandbox.Start(sandbox.Config{Rate: 20}, "127.0.0.1:0")
	if err != nil {
		return err
	}
	defer sb.Close(context.Background())
	var results []result
	for _, f := range strings.Split(clientList, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			return fmt.Errorf("bad -clients %q", clientList)
		}
		for _, kind := range []string{"cluster", "local"} {
			r, err := measure(sb, kind, n, callers, duration, skew)
			if err != nil {
				return err
			}
			results = append(results, r)
			fmt.Fprintf(os.Stderr, "done: %s\n", r.name)
		}
	}
	tw := tabwriter.NewWriter(os.Stdout, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "run\tmax in 1 s window\tsustained/s\tgrant wait p50\tp99\tNATS ops/grant\t429 answers")
	for _, r := range results {
		ops := "-"
		if r.opsPer > 0 {
			ops = fmt.Sprintf("%.2f", r.opsPer)
		}
		fmt.Fprintf(tw, "%s\t%d\t%.2f\t%v\t%v\t%s\t%d\n", r.name, r.maxWindow, r.rate, r.p50.Round(time.Millisecond),
			r.p99.Round(time.Millisecond), ops, r.answers429)
	}
	_ = tw.Flush()
	p50, p99, err := priority(sb, duration/2)
	if err != nil {
		return err
	}
	fmt.Printf("\nlive grant wait while a replay saturates the budget (3 clients): p50 %v, p99 %v\n",
		p50.Round(time.Millisecond), p99.Round(time.Millisecond))
	return nil
}

// cluster is three nats-server nodes in this process.
type cluster struct {
	nodes []*embedded.Server
	urls  []string
}

func startCluster() (*cluster, error) {
	var routes, clientAddrs, routeAddrs []string
	for range 3 {
		clientAddrs = append(clientAddrs, freeAddr())
		routeAddrs = append(routeAddrs, freeAddr())
	}
	for _, a := range routeAddrs {
		routes = append(routes, "nats-route://"+a)
	}
	c := &cluster{}
	var wg sync.WaitGroup
	errs := make([]error, 3)
	c.nodes = make([]*embedded.Server, 3)
	for i := range 3 {
		dir, err := os.MkdirTemp("", "limitbench")
		if err != nil {
			return nil, err
		}
		wg.Go(func() {
			c.nodes[i], errs[i] = embedded.Start(embedded.Config{Name: fmt.Sprintf("n%d", i), Listen: clientAddrs[i],
				StoreDir: dir, ClusterName: "limitbench", ClusterListen: routeAddrs[i], Routes: routes})
		})
		c.urls = append(c.urls, "nats://"+clientAddrs[i])
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return nil, err
		}
	}
	// JetStream needs its meta leader before buckets can be made.
	nc, err := nats.Connect(strings.Join(c.urls, ","))
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := nc.Request("$JS.API.INFO", nil, time.Second); err == nil {
			return c, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("cluster has no JetStream meta leader")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (c *cluster) stop() {
	for _, n := range c.nodes {
		if n != nil && n.Running() {
			n.Stop()
		}
	}
}

func freeAddr() string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// waiter is what both limiters offer.
type waiter interface {
	Wait(ctx context.Context, enterpriseID string, p ratelimit.Priority, opts ...ratelimit.WaitOption) error
}

func measure(sb *sandbox.Server, kind string, n, callers int, duration, skew time.Duration) (result, error) {
	name := fmt.Sprintf("%s, %d client(s)", kind, n)
	enterprise := fmt.Sprintf("bench-%s-%d", kind, n)
	token := "token-" + enterprise
	sb.AddEnterprise(sandbox.Enterprise{ID: enterprise, Token: token})
	client, err := xylink.NewClient(sb.URL, xylink.WithTenants(xylink.Credentials{EnterpriseID: enterprise, Token: xylink.Secret(token)}))
	if err != nil {
		return result{}, err
	}
	c, err := startCluster()
	if err != nil {
		return result{}, err
	}
	defer c.stop()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var limiters []waiter
	var clusters []*ratelimit.Cluster
	var conns []*nats.Conn
	for i := range n {
		// Each client prefers its own node and fails over to the others.
		urls := append([]string{c.urls[i%3]}, c.urls...)
		nc, err := nats.Connect(strings.Join(urls, ","), nats.DontRandomize(), nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
		if err != nil {
			return result{}, err
		}
		conns = append(conns, nc)
		defer nc.Close()
		if kind == "local" {
			limiters = append(limiters, ratelimit.NewLocal(func(string) float64 { return 20 }))
			continue
		}
		offset := time.Duration(rand.Int64N(int64(2*skew+1))) - skew
		lim, err := ratelimit.NewCluster(ctx, nc, ratelimit.Options{Name: fmt.Sprintf("client-%d", i), Replicas: 3,
			Now: func() time.Time { return time.Now().Add(offset) }, Log: zerolog.Nop()})
		if err != nil {
			return result{}, err
		}
		limiters = append(limiters, lim)
		clusters = append(clusters, lim)
	}
	var statsBefore []ratelimit.Stats
	for _, cl := range clusters {
		statsBefore = append(statsBefore, cl.Stats())
	}
	_ = statsBefore
	startReqs := len(sb.Requests())
	runCtx, stop := context.WithTimeout(ctx, duration)
	defer stop()
	var mu sync.Mutex
	var waits []time.Duration
	var granted atomic.Int64
	var wg sync.WaitGroup
	for i, lim := range limiters {
		for g := range callers {
			wg.Go(func() {
				for k := 0; ; k++ {
					start := time.Now()
					if lim.Wait(runCtx, enterprise, ratelimit.Live) != nil {
						return
					}
					w := time.Since(start)
					granted.Add(1)
					mu.Lock()
					waits = append(waits, w)
					mu.Unlock()
					_, _ = client.CreateGroups(context.Background(), enterprise,
						&xylink.CreateGroupsRequest{MeetingRoomNumber: fmt.Sprintf("c%d-g%d-%d", i, g, k)})
				}
			})
		}
	}
	// Mid-run, one node goes away.
	go func() {
		select {
		case <-time.After(duration / 2):
			c.nodes[2].Stop()
		case <-runCtx.Done():
		}
	}()
	wg.Wait()
	reqs := sb.Requests()[startReqs:]
	var arrivals []time.Time
	n429 := 0
	for _, r := range reqs {
		if r.EnterpriseID == enterprise && r.Endpoint == "dynamicGroup" {
			arrivals = append(arrivals, r.At)
			if r.Status == 429 {
				n429++
			}
		}
	}
	slices.Sort(waits)
	res := result{name: name, maxWindow: sandbox.MaxInWindow(arrivals, time.Second), answers429: n429}
	if len(arrivals) > 1 {
		slices.SortFunc(arrivals, func(a, b time.Time) int { return a.Compare(b) })
		res.rate = float64(len(arrivals)-1) / arrivals[len(arrivals)-1].Sub(arrivals[0]).Seconds()
	}
	if len(waits) > 0 {
		res.p50, res.p99 = waits[len(waits)/2], waits[len(waits)*99/100]
	}
	if len(clusters) > 0 && granted.Load() > 0 {
		var ops int64
		for _, cl := range clusters {
			s := cl.Stats()
			ops += 2*s.Requests + 2*s.Renewals // request + reply; lease write + ack
		}
		res.opsPer = float64(ops) / float64(granted.Load())
	}
	return res, nil
}

// priority: 3 cluster clients, 10 replay callers each always wanting grants, and
// one live call per client every 250 ms.
func priority(sb *sandbox.Server, duration time.Duration) (time.Duration, time.Duration, error) {
	c, err := startCluster()
	if err != nil {
		return 0, 0, err
	}
	defer c.stop()
	ctx, cancel := context.WithTimeout(context.Background(), duration)
	defer cancel()
	var lims []*ratelimit.Cluster
	for i := range 3 {
		nc, err := nats.Connect(c.urls[i])
		if err != nil {
			return 0, 0, err
		}
		defer nc.Close()
		lim, err := ratelimit.NewCluster(ctx, nc, ratelimit.Options{Name: fmt.Sprintf("p%d", i), Replicas: 3, Log: zerolog.Nop()})
		if err != nil {
			return 0, 0, err
		}
		lims = append(lims, lim)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var waits []time.Duration
	for i, lim := range lims {
		for range 10 {
			wg.Go(func() {
				for lim.Wait(ctx, "priority", ratelimit.Replay) == nil {
				}
			})
		}
		wg.Go(func() {
			time.Sleep(time.Duration(i) * 80 * time.Millisecond)
			for ctx.Err() == nil {
				start := time.Now()
				if lim.Wait(ctx, "priority", ratelimit.Live) != nil {
					return
				}
				mu.Lock()
				waits = append(waits, time.Since(start))
				mu.Unlock()
				time.Sleep(250 * time.Millisecond)
			}
		})
	}
	wg.Wait()
	if len(waits) == 0 {
		return 0, 0, fmt.Errorf("no live grants")
	}
	slices.Sort(waits)
	return waits[len(waits)/2], waits[len(waits)*99/100], nil
}
