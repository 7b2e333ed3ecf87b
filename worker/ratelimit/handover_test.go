package ratelimit

import (
	"testing"
	"time"
)

// A replica above its share hands over the shard whose move holds up the
// fewest grants: an idle one before the one a tenant is using.
func TestHandOverTheLeastBusyShard(t *testing.T) {
	now := time.Now()
	opts := Options{}
	opts.defaults()
	busy, idle, waiting := newDispenser(opts), newDispenser(opts), newDispenser(opts)
	busy.ents["e"] = &enterpriseQueue{index: -1, recent: []time.Time{now, now.Add(-time.Second)}}
	waiting.ents["f"] = &enterpriseQueue{index: -1, waiting: requestHeap{&pending{}}}
	idle.ents["g"] = &enterpriseQueue{index: -1, recent: []time.Time{now.Add(-time.Minute)}}
	hs := []*heldShard{{n: 1, disp: busy}, {n: 9, disp: idle}, {n: 4, disp: waiting}}
	if got := leastBusy(hs); got.n != 9 {
		t.Fatalf("handed over shard %d, want the idle shard 9", got.n)
	}
	hs[1].disp = newDispenser(opts) // now two idle ones at a tie: the lowest-numbered
	hs = append(hs, &heldShard{n: 2, disp: newDispenser(opts)})
	if got := leastBusy(hs); got.n != 2 {
		t.Fatalf("handed over shard %d, want 2", got.n)
	}
}
