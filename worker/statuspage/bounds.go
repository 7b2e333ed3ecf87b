package statuspage

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"
	"golang.org/x/time/rate"

	"github.com/xygroup/xygroup/worker/clusterstatus"
)

// Guesses at the replay token and the confirmation's signature: each client
// (remote address) may try guessPerClient at once, then one more every
// guessClientEvery; all clients together guessOverall at once, then one more
// every guessOverallEvery. Every attempt costs, right or wrong, before
// anything is compared: the answer tells nothing about the token.
const (
	guessPerClient    = 10
	guessClientEvery  = 30 * time.Second
	guessOverall      = 30
	guessOverallEvery = 2 * time.Second
	// guessClients bounds the clients remembered; those whose budget is
	// whole again are forgotten first.
	guessClients = 4096
)

type guessLimiter struct {
	mu      sync.Mutex
	now     func() time.Time
	overall *rate.Limiter
	clients map[string]*rate.Limiter
}

func newGuessLimiter() *guessLimiter {
	return &guessLimiter{now: time.Now, overall: rate.NewLimiter(rate.Every(guessOverallEvery), guessOverall),
		clients: map[string]*rate.Limiter{}}
}

// allow spends one attempt of the client's and one of the overall budget,
// or none if either is spent.
func (g *guessLimiter) allow(client string) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	now := g.now()
	l := g.clients[client]
	if l == nil {
		if len(g.clients) >= guessClients {
			for c, cl := range g.clients {
				if cl.TokensAt(now) >= guessPerClient {
					delete(g.clients, c)
				}
			}
			if len(g.clients) >= guessClients {
				return false
			}
		}
		l = rate.NewLimiter(rate.Every(guessClientEvery), guessPerClient)
		g.clients[client] = l
	}
	r := l.ReserveN(now, 1)
	if !r.OK() || r.DelayFrom(now) > 0 {
		r.CancelAt(now)
		return false
	}
	if !g.overall.AllowN(now, 1) {
		r.CancelAt(now)
		return false
	}
	return true
}

// clientOf names the client of a request by its remote address: an IPv4
// address, or an IPv6 address's /64 (what one host is usually given). A
// reverse proxy in front makes all its clients one.
func clientOf(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return host
	}
	a = a.Unmap()
	if a.Is6() {
		p, _ := a.Prefix(64)
		return p.String()
	}
	return a.String()
}

// Command views read NATS at most once per key every commandCacheFor, and
// at most commandReads of them at once; a view that would be one more is
// refused at once (429) rather than queued. The cache holds at most
// commandCacheBytes of events (each view up to an event of 512 KiB and the
// record's copy), whatever the number of commands viewed.
const (
	commandCacheFor   = time.Second
	commandReads      = 4
	commandsCached    = 1024
	commandCacheBytes = 32 << 20
	commandReadFor    = 10 * time.Second
)

var errBusy = errors.New("too many command views at once: try again in a second")

type cachedCommand struct {
	c     *clusterstatus.Command
	at    time.Time
	bytes int
}

// viewBytes is what a command's view holds beyond a few fields: its events.
func viewBytes(c *clusterstatus.Command) int {
	n := len(c.Record.TerminalEvent)
	if c.Terminal != nil {
		n += len(c.Terminal.Body)
	}
	return n
}

type commandCache struct {
	mu      sync.Mutex
	entries map[string]cachedCommand
	bytes   int // of the entries
	flight  singleflight.Group
	slots   chan struct{}
}

func newCommandCache() *commandCache {
	return &commandCache{entries: map[string]cachedCommand{}, slots: make(chan struct{}, commandReads)}
}

// get returns the command, read by read unless a reading of it younger than
// commandCacheFor is at hand or under way (then it waits for that one).
func (cc *commandCache) get(ctx context.Context, key string, read func(context.Context) (*clusterstatus.Command, error)) (*clusterstatus.Command, error) {
	cc.mu.Lock()
	if e, ok := cc.entries[key]; ok && time.Since(e.at) < commandCacheFor {
		cc.mu.Unlock()
		return e.c, nil
	}
	cc.mu.Unlock()
	ch := cc.flight.DoChan(key, func() (any, error) {
		select {
		case cc.slots <- struct{}{}:
		default:
			return nil, errBusy
		}
		defer func() { <-cc.slots }()
		// Not the first viewer's context: the others wait for this reading.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), commandReadFor)
		defer cancel()
		c, err := read(rctx)
		if err != nil {
			return nil, err
		}
		cc.put(key, c)
		return c, nil
	})
	select {
	case res := <-ch:
		if res.Err != nil {
			return nil, res.Err
		}
		return res.Val.(*clusterstatus.Command), nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (cc *commandCache) put(key string, c *clusterstatus.Command) {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	now := time.Now()
	size := viewBytes(c)
	if old, ok := cc.entries[key]; ok {
		cc.bytes -= old.bytes
		delete(cc.entries, key)
	}
	if len(cc.entries) >= commandsCached || cc.bytes+size > commandCacheBytes {
		for k, e := range cc.entries {
			if now.Sub(e.at) >= commandCacheFor {
				cc.bytes -= e.bytes
				delete(cc.entries, k)
			}
		}
		if len(cc.entries) >= commandsCached || cc.bytes+size > commandCacheBytes {
			clear(cc.entries)
			cc.bytes = 0
		}
	}
	if size > commandCacheBytes {
		return
	}
	cc.entries[key] = cachedCommand{c: c, at: now, bytes: size}
	cc.bytes += size
}
