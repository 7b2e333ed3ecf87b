package xylink

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/http/httptrace"
	"testing"
)

// Over TLS the transport hands out the *tls.Conn it made on the client's
// own connection: the check is armed on that one, under the TLS layer, and
// runs at the request's first write (the handshake is written before).
func TestWriteCheckArmedUnderTLS(t *testing.T) {
	a, b := net.Pipe()
	defer b.Close()
	raw := &checkedConn{Conn: a}
	tc := tls.Client(raw, &tls.Config{InsecureSkipVerify: true})
	_, cancel := context.WithCancel(context.Background())
	defer cancel()
	refused := errors.New("window passed")
	w := newWriteCheck(func() error { return refused }, cancel)
	w.arm(httptrace.GotConnInfo{Conn: tc})
	if _, err := raw.Write([]byte("x")); !errors.Is(err, refused) {
		t.Fatalf("write under the TLS connection: %v, want the check's refusal", err)
	}
	if w.refused() == nil {
		t.Fatal("the refusal is not kept")
	}
	// A request without a check clears what an earlier one armed.
	raw.check = func() error { return refused }
	newWriteCheck(nil, cancel).arm(httptrace.GotConnInfo{Conn: tc})
	if raw.check != nil {
		t.Fatal("a check armed for an earlier request is left on the connection")
	}
}
