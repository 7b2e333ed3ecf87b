package e2e

import (
	"testing"
	"time"
)

// Bad input at volume mixed with good commands, on the embedded default (one
// worker, no NATS_URL): every command ends in exactly one event, the bad ones
// failed.invalid_command carrying the meeting and enterprise they gave, and the
// good ones are created.
func TestBadInputAtVolume(t *testing.T) {
	knownFailure(t)
	h := New(t, Options{Nodes: 0, Workers: 1, Seed: 4})
	bad := BadCommands("bad", pick(4, 20))
	good := Commands("good", "", pick(150, 1000))
	var mixed []Command
	for i := range max(len(bad), len(good)) {
		if i < len(good) {
			mixed = append(mixed, good[i])
		}
		if i < len(bad) {
			mixed = append(mixed, bad[i])
		}
	}
	h.Note("%d bad commands (oversized, control characters, invalid UTF-8, wrong types, unknown mode, not JSON) among %d good", len(bad), len(good))
	h.Publish(mixed)
	h.Check(pick(2*time.Minute, 6*time.Minute))
}
