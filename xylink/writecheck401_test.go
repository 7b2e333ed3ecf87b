package xylink_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"

	"github.com/xygroup/xygroup/xylink"
	"github.com/xygroup/xygroup/xylink/sandbox"
)

// After a refused app token (401) the call is repeated; the repeat refused
// at its write goes back to the gate. When the gate then refuses, the call's
// GateError must still count the one request that left (the 401): the
// caller keeps its "sent" mark and attempt for it.
func TestWriteRefusalAfterA401CountsTheRequestThatLeft(t *testing.T) {
	sb := startSandbox(t, sandbox.Config{Rate: 10000})
	c := newClient(t, sb.URL)
	if _, err := c.CreateGroups(context.Background(), ent2, manual("warm-401")); err != nil {
		t.Fatal(err) // an app token in hand
	}
	sb.ExpireTokens()
	before := dynamicGroupRequests(sb)
	var gates, checks atomic.Int32
	gate := xylink.BeforeEachRequest(func(context.Context) error {
		if gates.Add(1) == 3 {
			return errors.New("no grant")
		}
		return nil
	})
	// Checks 1 and 2: the first request (before the connection, at its
	// write); 3: the repeat before its connection; 4: at its write, refused.
	check := xylink.CheckAtWrite(func() error {
		if checks.Add(1) == 4 {
			return errors.New("window passed")
		}
		return nil
	})
	_, err := c.CreateGroups(context.Background(), ent2, manual("repeat-401"), gate, check)
	var ge *xylink.GateError
	if !errors.As(err, &ge) {
		t.Fatalf("want the gate's refusal, got %T %v (gates %d, checks %d)", err, err, gates.Load(), checks.Load())
	}
	sent := dynamicGroupRequests(sb) - before
	if sent != 1 || ge.Requests != sent || gates.Load() != 3 || checks.Load() != 4 {
		t.Fatalf("%d requests at the API, GateError.Requests %d (gates %d, checks %d)", sent, ge.Requests, gates.Load(), checks.Load())
	}
}
