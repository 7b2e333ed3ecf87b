package e2e

import (
	"testing"
	"time"
)

// A slow 2.0 token endpoint (200 ms) with 2.0 credentials and three workers:
// the calls that waited for the token must still keep the enterprise's rate at
// the API.
func TestSlowTokenEndpoint(t *testing.T) {
	knownFailure(t)
	h := New(t, Options{Nodes: 1, Workers: 3, V2: true, Seed: 1})
	h.Proxy.SetFaults(Faults{TokenDelay: 200 * time.Millisecond})
	n := pick(300, 2000)
	h.Publish(Commands("tok", "", n))
	h.Check(pick(3*time.Minute, 10*time.Minute))
}
