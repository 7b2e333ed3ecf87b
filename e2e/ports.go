package e2e

import (
	"net"
	"strconv"
	"testing"
)

// FreePort returns a loopback TCP port that was free a moment ago.
func FreePort(tb testing.TB) int {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// FreeAddr returns 127.0.0.1:<a free port>.
func FreeAddr(tb testing.TB) string {
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(FreePort(tb)))
}
