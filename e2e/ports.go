package e2e

import (
	"math/rand/v2"
	"net"
	"strconv"
	"sync"
	"testing"
)

// Ports are picked below Linux's ephemeral range (32768 and up by default),
// which the kernel hands to outgoing connections: a port picked there and
// bound a moment later by a worker process may have been taken meanwhile by
// one of the many connections a scenario opens. Each is picked once per run
// of the tests.
var ports = struct {
	sync.Mutex
	next int
}{next: portsFrom + rand.IntN(portsTo-portsFrom)}

const portsFrom, portsTo = 20000, 32000

// FreePort returns a loopback TCP port that was free a moment ago.
func FreePort(tb testing.TB) int {
	tb.Helper()
	ports.Lock()
	defer ports.Unlock()
	for range portsTo - portsFrom {
		p := ports.next
		if ports.next++; ports.next >= portsTo {
			ports.next = portsFrom
		}
		ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
		if err != nil {
			continue
		}
		_ = ln.Close()
		return p
	}
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
