package xylink

import (
	"context"
	"crypto/tls"
	"net"
	"net/http/httptrace"
	"sync"
)

// heldAtWrite: CheckAtWrite's check refused a request at its write; nothing
// of it was written.
type heldAtWrite struct{ err error }

func (e *heldAtWrite) Error() string {
	return "xylink: request held at its write: " + e.err.Error()
}
func (e *heldAtWrite) Unwrap() error { return e.err }

// checkedConn is a connection of the client's own transport: a check armed
// on it runs at the connection's next write, the request's first byte (an
// HTTP/1.1 connection carries one request at a time; the TLS handshake is
// written before the connection is handed out).
type checkedConn struct {
	net.Conn
	mu    sync.Mutex
	check func() error
}

func (c *checkedConn) Write(b []byte) (int, error) {
	c.mu.Lock()
	check := c.check
	c.check = nil
	c.mu.Unlock()
	if check != nil {
		if err := check(); err != nil {
			return 0, err
		}
	}
	return c.Conn.Write(b)
}

func checkedDial(dial func(ctx context.Context, network, addr string) (net.Conn, error)) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		conn, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return &checkedConn{Conn: conn}, nil
	}
}

// writeCheck runs one request's CheckAtWrite check: before the connection is
// asked for, and again armed on the connection when the transport hands out
// one of the client's own. A refusal at either point is sure to have sent
// nothing: the armed check runs at the request's first write, and refuses
// it whole (the transport's WroteRequest would say "written" once the
// request is in its buffer, before it reaches the connection).
type writeCheck struct {
	check  func() error
	cancel func()
	mu     sync.Mutex
	held   error
}

func newWriteCheck(check func() error, cancel func()) *writeCheck {
	return &writeCheck{check: check, cancel: cancel}
}

// run is the check; a refusal is kept and cancels the request.
func (w *writeCheck) run() error {
	if w.check == nil {
		return nil
	}
	if err := w.check(); err != nil {
		w.mu.Lock()
		w.held = err
		w.mu.Unlock()
		w.cancel()
		return &heldAtWrite{err: err}
	}
	return nil
}

// now runs the check before the connection is asked for.
func (w *writeCheck) now() error { return w.run() }

// arm is the request's GotConn hook.
func (w *writeCheck) arm(info httptrace.GotConnInfo) {
	conn := info.Conn
	if tc, ok := conn.(*tls.Conn); ok {
		conn = tc.NetConn()
	}
	if cc, ok := conn.(*checkedConn); ok {
		cc.mu.Lock()
		cc.check = nil // a check armed for an earlier request that never wrote
		if w.check != nil {
			cc.check = w.run
		}
		cc.mu.Unlock()
		return
	}
	// Not the client's own connection (a caller's http.Client): the check
	// ran before the connection was asked for, the latest point at which a
	// refusal is sure to send nothing.
}

// refused is the refusal, if the check refused.
func (w *writeCheck) refused() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.held == nil {
		return nil
	}
	return &heldAtWrite{err: w.held}
}
