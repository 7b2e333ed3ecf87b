package worker

import (
	"fmt"
	"testing"
	"time"
)

func openLanes(n int, owner func(i int) string, lease time.Time) map[string]meetingEntry {
	all := map[string]meetingEntry{}
	for i := range n {
		all[fmt.Sprintf("lane-%02d", i)] = meetingEntry{rec: meetingRecord{Kind: kindLane, State: laneOpen, Owner: owner(i), LeaseUntil: lease}}
	}
	return all
}

// A replica's target is its share of the open lanes among the replicas
// alive, within its cap; beyond it, its longest-served lanes are handed over.
func TestLanePlanShareAndCap(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	s := newServedLanes(4)
	all := openLanes(6, func(int) string { return "" }, time.Time{})
	if got := s.plan(all, "me", 1, now); got != 4 {
		t.Fatalf("target alone with 6 lanes and a cap of 4: %d, want 4", got)
	}
	for i := range 6 {
		sl := s.take(fmt.Sprintf("lane-%02d", i), 4, now.Add(time.Duration(i)*time.Second))
		if (sl != nil) != (i < 4) {
			t.Fatalf("lane %d taken: %v, want the first 4 only", i, sl != nil)
		}
	}
	// Two more replicas: the share is 2; the two lanes served longest go.
	if got := s.plan(all, "me", 3, now.Add(10*time.Second)); got != 2 {
		t.Fatalf("target with 3 replicas: %d, want 2", got)
	}
	for i := range 4 {
		if leave := s.lanes[fmt.Sprintf("lane-%02d", i)].leave.Load(); leave != (i < 2) {
			t.Errorf("lane %d marked to hand over: %v", i, leave)
		}
	}
	s.drop("lane-00", true, now.Add(11*time.Second))
	if s.take("lane-00", 4, now.Add(12*time.Second)) != nil {
		t.Error("a lane handed over was taken again at once")
	}
}

// At the cap, with a lane waiting for an owner for a lease, the lane served
// longest is handed over once it has been served for laneTurnover.
func TestLanePlanTurnsAtTheCap(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	s := newServedLanes(2)
	all := openLanes(3, func(i int) string {
		if i < 2 {
			return "me"
		}
		return ""
	}, now.Add(time.Hour))
	s.take("lane-00", 2, now)
	s.take("lane-01", 2, now.Add(time.Second))
	s.plan(all, "me", 1, now)
	s.plan(all, "me", 1, now.Add(laneLease))
	if s.lanes["lane-00"].leave.Load() {
		t.Fatal("handed over before it was served for laneTurnover")
	}
	s.plan(all, "me", 1, now.Add(laneTurnover))
	if !s.lanes["lane-00"].leave.Load() || s.lanes["lane-01"].leave.Load() {
		t.Fatalf("at the cap with a lane waiting: lane-00 leaves %v, lane-01 leaves %v; want lane-00 only",
			s.lanes["lane-00"].leave.Load(), s.lanes["lane-01"].leave.Load())
	}
}

// A tenant's turns leave no entry once the last is done; an enterprise that
// is not configured gets none.
func TestLaneTurnsSwept(t *testing.T) {
	l := newLanes(func(string) float64 { return 1 }, &meetingView{meetings: map[string]meetingEntry{}}, func() int { return 1 },
		func(ent string) bool { return ent == "known" }, 8)
	if l.intakeTurn("unknown") != nil {
		t.Fatal("an intake turn for an enterprise that is not configured")
	}
	a, b := l.intakeTurn("known"), l.intakeTurn("known")
	g := l.grantTurn("known")
	a.done()
	select {
	case <-b.after:
	default:
		t.Fatal("the second turn does not follow the first")
	}
	if _, intake, grant, _ := l.sizes(); intake != 1 || grant != 1 {
		t.Fatalf("%d intake and %d grant entries with turns open, want 1 and 1", intake, grant)
	}
	b.done()
	g.done()
	if inPipe, intake, grant, gauged := l.sizes(); inPipe+intake+grant+gauged != 0 {
		t.Fatalf("entries left: %d %d %d %d", inPipe, intake, grant, gauged)
	}
}
