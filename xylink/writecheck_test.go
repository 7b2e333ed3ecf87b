package xylink_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"

	"github.com/xygroup/xygroup/xylink"
	"github.com/xygroup/xygroup/xylink/sandbox"
)

func dynamicGroupRequests(sb *sandbox.Server) int {
	n := 0
	for _, r := range sb.Requests() {
		if r.Endpoint == "dynamicGroup" {
			n++
		}
	}
	return n
}

// A check that refuses at the write (it passed just before the connection
// was asked for) sends nothing: not on that connection, and not on another
// one the transport would otherwise try it again on (a kept-alive
// connection). The gate is asked again, and the request goes on its second
// grant: one request at the API per call.
func TestCheckAtWriteRefusesBeforeTheFirstByte(t *testing.T) {
	sb := startSandbox(t, sandbox.Config{Rate: 10000})
	c := newClient(t, sb.URL)
	for i, meeting := range []string{"write-1", "write-2", "write-3"} { // a fresh connection, then kept-alive ones
		var gates, checks atomic.Int32
		gate := xylink.BeforeEachRequest(func(context.Context) error { gates.Add(1); return nil })
		// Calls 1 and 3 run before the connection is asked for; 2 at the
		// first request's write: refused.
		check := xylink.CheckAtWrite(func() error {
			if checks.Add(1) == 2 {
				return errors.New("window passed")
			}
			return nil
		})
		before := dynamicGroupRequests(sb)
		if _, err := c.CreateGroups(context.Background(), ent1, manual(meeting), gate, check); err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
		if got := dynamicGroupRequests(sb) - before; got != 1 || gates.Load() != 2 || checks.Load() != 4 {
			t.Fatalf("call %d: %d requests at the API, %d gates, %d checks; want 1, 2, 4", i, got, gates.Load(), checks.Load())
		}
	}
	// Without a gate, the refusal is the call's answer: nothing was sent.
	before := dynamicGroupRequests(sb)
	var checks atomic.Int32
	_, err := c.CreateGroups(context.Background(), ent1, manual("write-4"), xylink.CheckAtWrite(func() error {
		if checks.Add(1) == 2 {
			return errors.New("window passed")
		}
		return nil
	}))
	var ge *xylink.GateError
	if !errors.As(err, &ge) || ge.Requests != 0 || dynamicGroupRequests(sb) != before {
		t.Fatalf("refused at the write without a gate: %T %v, %d requests", err, err, dynamicGroupRequests(sb)-before)
	}
	if o := xylink.Classify(err); o.Unknown || o.Disposition != xylink.Retry {
		t.Fatalf("refused at the write classified %+v", o)
	}
}
