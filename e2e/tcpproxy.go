package e2e

import (
	"net"
	"sync"
	"testing"
)

// TCPProxy forwards loopback TCP connections to a target. Blackhole makes it
// behave like a network that drops every packet: nothing is forwarded either
// way, closes are not passed on, new connections are accepted but get no
// answer. Heal lets the held bytes through again, like TCP retransmissions
// after a partition, and closes the connections whose other side went away
// meanwhile.
type TCPProxy struct {
	Target string
	ln     net.Listener

	mu        sync.Mutex
	cond      *sync.Cond
	blackhole bool
	conns     map[net.Conn]struct{}
	closed    bool
}

// NewTCPProxy listens on a free loopback port; it is closed at cleanup.
func NewTCPProxy(tb testing.TB, target string) *TCPProxy {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	p := &TCPProxy{Target: target, ln: ln, conns: map[net.Conn]struct{}{}}
	p.cond = sync.NewCond(&p.mu)
	go p.accept()
	tb.Cleanup(p.Close)
	return p
}

// Addr is where clients connect.
func (p *TCPProxy) Addr() string { return p.ln.Addr().String() }

// Blackhole drops everything until Heal.
func (p *TCPProxy) Blackhole() {
	p.mu.Lock()
	p.blackhole = true
	p.mu.Unlock()
}

// Heal forwards again.
func (p *TCPProxy) Heal() {
	p.mu.Lock()
	p.blackhole = false
	p.cond.Broadcast()
	p.mu.Unlock()
}

// Reset closes every connection now (both sides see the connection reset).
func (p *TCPProxy) Reset() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.SetLinger(0)
		}
		_ = c.Close()
	}
}

// Close stops the proxy and closes every connection.
func (p *TCPProxy) Close() {
	p.mu.Lock()
	p.closed, p.blackhole = true, false
	p.cond.Broadcast()
	p.mu.Unlock()
	_ = p.ln.Close()
	p.Reset()
}

// passable waits while the proxy is blackholed; false once it is closed.
func (p *TCPProxy) passable() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for p.blackhole && !p.closed {
		p.cond.Wait()
	}
	return !p.closed
}

func (p *TCPProxy) track(c net.Conn, add bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if add {
		p.conns[c] = struct{}{}
	} else {
		delete(p.conns, c)
	}
}

func (p *TCPProxy) accept() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.track(c, true)
		go p.serve(c)
	}
}

func (p *TCPProxy) serve(client net.Conn) {
	defer p.track(client, false)
	defer client.Close()
	if !p.passable() { // a connection made during a blackhole hangs until it heals
		return
	}
	upstream, err := net.Dial("tcp", p.Target)
	if err != nil {
		return
	}
	p.track(upstream, true)
	defer p.track(upstream, false)
	defer upstream.Close()
	done := make(chan struct{}, 2)
	go p.pipe(upstream, client, done)
	go p.pipe(client, upstream, done)
	<-done
}

// pipe copies src to dst, holding each chunk (and the close) while blackholed.
func (p *TCPProxy) pipe(dst, src net.Conn, done chan<- struct{}) {
	defer func() { done <- struct{}{} }()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if !p.passable() {
			return
		}
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}
