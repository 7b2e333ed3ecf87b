package ratelimit_test

import (
	"context"
	"encoding/json"
	"net"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/xygroup/xygroup/worker/ratelimit"
	wt "github.com/xygroup/xygroup/worker/workertest"
)

// A renewal whose write was applied but whose answer never came leaves the
// dispenser with an old revision: its next renewal fails the
// compare-and-swap. The lease still names this dispenser, so no other
// replica wrote it since: the shard keeps its dispenser (no step-down, no
// election). A lease written by another dispenser is lost at once.
func TestRenewalRecognisesItsOwnLostWrite(t *testing.T) {
	srv := wt.StartNATS(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	lim, err := ratelimit.NewCluster(ctx, wt.Connect(t, srv), ratelimit.Options{Name: "replica-0"})
	if err != nil {
		t.Fatal(err)
	}
	await(t, 30*time.Second, "every shard held", func() bool { return len(lim.HeldShards()) == ratelimit.DefaultShards })
	kv, err := wt.JetStream(t, wt.Connect(t, srv)).KeyValue(ctx, ratelimit.Bucket)
	if err != nil {
		t.Fatal(err)
	}
	elections := lim.Stats().Elections

	// The dispenser's own write, applied without its answer: the same value again.
	e, err := kv.Get(ctx, "shard.0")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, "shard.0", e.Value()); err != nil {
		t.Fatal(err)
	}
	renewals := lim.Stats().Renewals
	await(t, 10*time.Second, "four more rounds of renewals", func() bool {
		return lim.Stats().Renewals >= renewals+4*ratelimit.DefaultShards
	})
	if !slices.Contains(lim.HeldShards(), 0) || lim.Stats().Elections != elections {
		t.Fatalf("after a renewal's lost answer: shards %v, elections %d (was %d); want shard 0 kept, no election",
			lim.HeldShards(), lim.Stats().Elections, elections)
	}

	// Another dispenser's write: the lease is lost.
	e, err = kv.Get(ctx, "shard.0")
	if err != nil {
		t.Fatal(err)
	}
	var info map[string]any
	if err := json.Unmarshal(e.Value(), &info); err != nil {
		t.Fatal(err)
	}
	if info["dispenserId"] == nil {
		t.Fatalf("the lease names no dispenser: %s", e.Value())
	}
	info["dispenserId"] = "another"
	other, _ := json.Marshal(info)
	if _, err := kv.Put(ctx, "shard.0", other); err != nil {
		t.Fatal(err)
	}
	await(t, 10*time.Second, "shard 0 given up", func() bool { return !slices.Contains(lim.HeldShards(), 0) })
}

// A dispenser whose lease writes are answered late (what it receives from
// NATS 600 ms late, for three renewals: the fence, read then written, takes 1.2 s) but within StopAfter keeps its
// shard: no step-down and no election, and it grants once the link is
// quick again.
func TestSlowRenewalsKeepTheShard(t *testing.T) {
	srv := wt.StartNATS(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	link := &latencyLink{}
	nc, err := nats.Connect(srv.ClientURL(), nats.Name("dispenser"), nats.SetCustomDialer(link))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	lim, err := ratelimit.NewCluster(ctx, nc, ratelimit.Options{Name: "dispenser", Shards: 1})
	if err != nil {
		t.Fatal(err)
	}
	await(t, 10*time.Second, "a dispenser", func() bool { return lim.Stats().Dispensing })
	if err := lim.Wait(ctx, "e", ratelimit.Live); err != nil {
		t.Fatal(err)
	}
	link.delay.Store(int64(600 * time.Millisecond))
	renewals := lim.Stats().Renewals
	await(t, 20*time.Second, "three renewals over the slow link", func() bool { return lim.Stats().Renewals >= renewals+3 })
	link.delay.Store(0)
	wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
	defer wcancel()
	if err := lim.Wait(wctx, "e", ratelimit.Live); err != nil {
		t.Fatalf("no grant once the link is quick again: %v", err)
	}
	if s := lim.Stats(); s.Elections != 1 || s.Shards != 1 {
		t.Fatalf("elections %d, shards held %d: want the one shard kept without another election", s.Elections, s.Shards)
	}
}

// latencyLink delays what a client receives from NATS by delay, without
// limiting how much: bytes are read as they come and handed over once
// delay has passed since.
type latencyLink struct{ delay atomic.Int64 }

type latencyConn struct {
	net.Conn
	chunks chan chunk
	rest   []byte
	err    error
}

type chunk struct {
	b   []byte
	at  time.Time
	err error
}

func (l *latencyLink) Dial(network, address string) (net.Conn, error) {
	c, err := net.Dial(network, address)
	if err != nil {
		return nil, err
	}
	lc := &latencyConn{Conn: c, chunks: make(chan chunk, 1<<16)}
	go func() {
		for {
			b := make([]byte, 32<<10)
			n, err := c.Read(b)
			lc.chunks <- chunk{b[:n], time.Now().Add(time.Duration(l.delay.Load())), err}
			if err != nil {
				close(lc.chunks)
				return
			}
		}
	}()
	return lc, nil
}

func (c *latencyConn) Read(b []byte) (int, error) {
	if len(c.rest) == 0 {
		if c.err != nil {
			return 0, c.err
		}
		ch, ok := <-c.chunks
		if !ok {
			return 0, net.ErrClosed
		}
		time.Sleep(time.Until(ch.at))
		c.rest, c.err = ch.b, ch.err
		if len(c.rest) == 0 {
			return 0, c.err
		}
	}
	n := copy(b, c.rest)
	c.rest = c.rest[n:]
	return n, nil
}
