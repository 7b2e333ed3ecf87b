package workertest

import (
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/xygroup/xygroup/worker/embedded"
)

// Relay is a TCP relay to a NATS server that delays what passes through it, in
// each direction by its own latency, which a test may change at any time.
// Bytes keep their order and throughput is not limited: a replica in another
// zone (a constant latency), or a link to NATS that turns slow for a moment.
type Relay struct {
	ln       net.Listener
	target   string
	toServer atomic.Int64 // nanoseconds
	toClient atomic.Int64
	mu       sync.Mutex
	conns    []net.Conn
}

// StartRelay relays to the server until Close or the test's cleanup.
func StartRelay(t testing.TB, s *embedded.Server) *Relay {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &Relay{ln: ln, target: strings.TrimPrefix(s.ClientURL(), "nats://")}
	t.Cleanup(r.Close)
	go r.accept()
	return r
}

// URL is the relay's NATS URL.
func (r *Relay) URL() string { return "nats://" + r.ln.Addr().String() }

// SetLatency delays each chunk read from now on by toServer on its way to
// NATS and by toClient on its way back.
func (r *Relay) SetLatency(toServer, toClient time.Duration) {
	r.toServer.Store(int64(toServer))
	r.toClient.Store(int64(toClient))
}

// Close ends the relay and every connection through it, as a network that
// fails.
func (r *Relay) Close() {
	r.ln.Close()
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, c := range r.conns {
		c.Close()
	}
}

func (r *Relay) accept() {
	for {
		c, err := r.ln.Accept()
		if err != nil {
			return
		}
		s, err := net.Dial("tcp", r.target)
		if err != nil {
			c.Close()
			continue
		}
		r.mu.Lock()
		r.conns = append(r.conns, c, s)
		r.mu.Unlock()
		go pump(c, s, &r.toServer)
		go pump(s, c, &r.toClient)
	}
}

type delayedChunk struct {
	data []byte
	due  time.Time
}

// pump passes what src sends on to dst, each chunk latency after it was read.
func pump(src, dst net.Conn, latency *atomic.Int64) {
	ch := make(chan delayedChunk, 1<<16)
	go func() {
		defer dst.Close()
		for c := range ch {
			if d := time.Until(c.due); d > 0 {
				time.Sleep(d)
			}
			if _, err := dst.Write(c.data); err != nil {
				return
			}
		}
	}()
	buf := make([]byte, 64<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			ch <- delayedChunk{data: append([]byte(nil), buf[:n]...), due: time.Now().Add(time.Duration(latency.Load()))}
		}
		if err != nil {
			close(ch)
			return
		}
	}
}
