package ratelimit_test

import (
	"bytes"
	"context"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/xygroup/xygroup/worker/ratelimit"
	wt "github.com/xygroup/xygroup/worker/workertest"
)

// slowLink is a client's TCP link to NATS whose inbound direction can be
// slowed: every read waits `always` after its bytes arrived, and the next read
// holding a grant waits `once` (a pause of the process or of the network,
// for that one grant).
type slowLink struct {
	always atomic.Int64 // nanoseconds
	once   atomic.Int64 // nanoseconds, for the next read holding a grant
}

type slowConn struct {
	net.Conn
	l *slowLink
}

var grantBytes = []byte(`"ok":true`)

func (c *slowConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if n > 0 {
		if d := c.l.always.Load(); d > 0 {
			time.Sleep(time.Duration(d))
		}
		if d := c.l.once.Load(); d > 0 && bytes.Contains(b[:n], grantBytes) && c.l.once.CompareAndSwap(d, 0) {
			time.Sleep(time.Duration(d))
		}
	}
	return n, err
}

func (l *slowLink) Dial(network, address string) (net.Conn, error) {
	c, err := net.Dial(network, address)
	if err != nil {
		return nil, err
	}
	return &slowConn{Conn: c, l: l}, nil
}

// slowLinkSetup: a dispenser replica on a plain connection, and a requester
// replica whose link can be slowed. The requester never dispenses (the
// dispenser is elected first and keeps its lease).
func slowLinkSetup(t *testing.T, ctx context.Context) (disp, req *ratelimit.Cluster, link *slowLink) {
	t.Helper()
	srv := wt.StartNATS(t)
	// One shard: the first replica holds it, and keeps it.
	disp, err := ratelimit.NewCluster(ctx, wt.Connect(t, srv), ratelimit.Options{Name: "dispenser", Shards: 1})
	if err != nil {
		t.Fatal(err)
	}
	await(t, 10*time.Second, "a dispenser", func() bool { return disp.Stats().Dispensing })
	link = &slowLink{}
	nc, err := nats.Connect(srv.ClientURL(), nats.Name("requester"), nats.SetCustomDialer(link))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	req, err = ratelimit.NewCluster(ctx, nc, ratelimit.Options{Name: "requester", Shards: 1})
	if err != nil {
		t.Fatal(err)
	}
	// The usual transit on this network.
	for range 5 {
		if err := req.Wait(ctx, "e", ratelimit.Live); err != nil {
			t.Fatal(err)
		}
	}
	if req.Stats().Dispensing {
		t.Fatal("the requester dispenses")
	}
	return disp, req, link
}

// A caller asks for B once A's request is queued (ratelimit.Queued). A's
// grant is held 40 ms on its way (a pause, a blip) and not used; A asks again
// at its place, so B is still granted after A.
func TestLateGrantKeepsItsPlace(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, req, link := slowLinkSetup(t, ctx)

	link.once.Store(int64(40 * time.Millisecond)) // A's grant is held on its way
	var mu sync.Mutex
	var order []string
	aQueued := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := req.Wait(ctx, "e", ratelimit.Live, ratelimit.Queued(func() { close(aQueued) })); err != nil {
			t.Error(err)
			return
		}
		mu.Lock()
		order = append(order, "A")
		mu.Unlock()
	})
	wg.Go(func() {
		<-aQueued
		if err := req.Wait(ctx, "e", ratelimit.Live); err != nil {
			t.Error(err)
			return
		}
		mu.Lock()
		order = append(order, "B")
		mu.Unlock()
	})
	wg.Wait()
	st := req.Stats()
	t.Logf("grant order %v; requester stats %+v", order, st)
	if len(order) == 2 && order[0] != "A" {
		t.Fatalf("B asked after A's request was queued (same replica, dispenser and priority) yet was granted first: %v (stale grants: %d)",
			order, st.Stale)
	}
}

// A link that becomes 30 ms slower (congestion, a reconnect to a farther
// node) makes grants late only until lateShift has passed: then its transit
// is the usual one, and the replica keeps using its grants.
func TestSlowerLinkBecomesTheUsualTransit(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	_, req, link := slowLinkSetup(t, ctx)

	link.always.Store(int64(30 * time.Millisecond))
	before := req.Stats()
	wctx, wcancel := context.WithTimeout(ctx, 5*time.Second)
	defer wcancel()
	granted := 0
	for req.Wait(wctx, "e", ratelimit.Live) == nil {
		granted++
	}
	after := req.Stats()
	t.Logf("in 5 s on a link 30 ms slower: %d grants used, %d received, %d thrown away as stale", granted,
		after.Grants-before.Grants, after.Stale-before.Stale)
	// 20/s: about 100 grants in 5 s; a replica keeps at least half of them.
	if granted < 50 {
		t.Fatalf("starved: %d grants used in 5 s at 20/s (%d received and thrown away as late)", granted, after.Stale-before.Stale)
	}
}

// A lane's 40 live requests all queued at once, served at about 10/s (probes
// take half the grants, one 429 widened the guard): the later ones wait longer
// than MaxQueueWait and are told to ask again. They ask again at their places,
// so the lane is granted in order.
func TestLongQueueAskedAgainKeepsItsOrder(t *testing.T) {
	reps := startReplicas(t, 2, ratelimit.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	waitForDispenser(t, reps)
	asker, prober := reps[0].lim, reps[1].lim
	if asker.Dispenses("lane") {
		asker, prober = prober, asker
	}
	// One 429 seen: the dispenser spaces the enterprise's grants one guard
	// step wider (its grants of the lease show it).
	prober.Throttled("lane")
	bg, stopBg := context.WithCancel(ctx)
	defer stopBg()
	var bgWG sync.WaitGroup
	for range 12 { // probes of parked meetings, due all the time
		bgWG.Go(func() {
			for prober.Wait(bg, "lane", ratelimit.Probe) == nil {
			}
		})
	}
	const n = 40 // a lane's budget at 20/s (ceil(rate x laneAhead))
	order := askInTurn(ctx, t, asker, "lane", n)
	stopBg()
	bgWG.Wait()
	for i := 1; i < len(order); i++ {
		if order[i] < order[i-1] {
			t.Fatalf("lane commands granted out of order (one dispenser throughout): %v; %+v for %d grants",
				order, asker.Stats(), n)
		}
	}
}
