package e2e

import (
	"testing"
	"time"
)

// Network jitter of 0–50 ms on the way in, three workers with the default rate
// guard: the enterprise's rate still holds at the API.
func TestNetworkJitter(t *testing.T) {
	knownFailure(t)
	h := New(t, Options{Nodes: 1, Workers: 3, Seed: 12, WorkerEnv: map[string]string{"XYGROUP_RATE_GUARD": "25ms"}})
	h.Proxy.SetFaults(Faults{InJitter: 50 * time.Millisecond})
	h.Publish(Commands("jitter", "", pick(300, 2000)))
	h.Check(pick(3*time.Minute, 10*time.Minute))
}

// Several tenants from a tenants file with different rates (20, 20 and 2/s):
// each keeps to its own rate at the API; each tenant's created/s is printed.
func TestTenantRates(t *testing.T) {
	knownFailure(t)
	tenants := []Tenant{
		{ID: "e2e-tenant-a", Token: "e2e-token-a-91c4f0d27b3e58a6", Rate: 20},
		{ID: "e2e-tenant-b", Token: "e2e-token-b-3a7e1c95d0f26b84", Rate: 20},
		{ID: "e2e-tenant-small", Token: "e2e-token-s-c8d2f47a05e1b396", Rate: 2},
	}
	h := New(t, Options{Nodes: 1, Workers: 3, Tenants: tenants, Seed: 13})
	counts := map[string]int{"e2e-tenant-a": pick(150, 800), "e2e-tenant-b": pick(150, 800), "e2e-tenant-small": pick(20, 100)}
	var cmds []Command
	per := map[string][]Command{}
	for _, tn := range tenants {
		per[tn.ID] = Commands("tenant-"+tn.ID, tn.ID, counts[tn.ID])
	}
	for i := range counts["e2e-tenant-a"] { // interleaved, as a scheduler would publish
		for _, tn := range tenants {
			if i < len(per[tn.ID]) {
				cmds = append(cmds, per[tn.ID][i])
			}
		}
	}
	h.Publish(cmds)
	h.Events.AwaitEnded(IDs(cmds), pick(3*time.Minute, 10*time.Minute))
	for _, tn := range tenants {
		n, last := 0, h.Started
		for _, e := range h.Events.Events() {
			if e.Subject == SubjectCreated && e.Fields["enterpriseId"] == tn.ID {
				n++
				if e.Stored.After(last) {
					last = e.Stored
				}
			}
		}
		span := last.Sub(h.Started)
		h.Note("tenant %s (rate %g): %d commands, %d created, %.2f created/s over %v", tn.ID, tn.Rate, len(per[tn.ID]), n,
			rate(n, span), span.Round(100*time.Millisecond))
	}
	h.Check(time.Minute)
}
