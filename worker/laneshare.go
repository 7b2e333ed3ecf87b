package worker

import (
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// A replica serves at most its share of the open lanes: ceil(open lanes /
// replicas alive), and never more than the replica's cap (WithLaneLimits). It
// takes a lane only while it serves fewer; one that serves more (a replica
// joined, or lanes closed) hands its longest-served lanes over: it stops
// taking their commands, waits until each command it took has its place in
// the dispenser's order (so that the next owner's commands come after, and
// the tenant's order is kept), then gives up the lease, and another replica
// takes the lane. The commands it took stay its own until settled (the lane
// consumer does not deliver them elsewhere): none is sent twice.
//
// When every replica is at its cap and a lane has had no owner for a lease,
// a replica at its cap hands over the lane it has served longest (once it has
// served it for laneTurnover) and takes a waiting one: every lane is served in
// turn, and its commands (their deadlines included) are not left behind.
const (
	laneTurnover    = 30 * time.Second
	defaultMaxLanes = 64
	// defaultLaneHandlers: lane commands in flight per replica. Served lanes
	// share them; a lane's owner keeps at most laneAhead of its tenant's rate
	// in its pipeline anyway.
	defaultLaneHandlers = 512
)

// servedLane is a lane this replica serves.
type servedLane struct {
	since time.Time
	// leave: hand the lane over once undecided is zero.
	leave atomic.Bool
	// inFlight: its commands whose handler runs; undecided: those that do not
	// yet hold their place in the dispenser's order (their grant turn is not done).
	inFlight, undecided atomic.Int64
}

// servedLanes are the lanes this replica serves.
type servedLanes struct {
	max int

	mu    sync.Mutex
	lanes map[string]*servedLane
	// left: lanes handed over lately, not taken again before another replica
	// could take them. unowned: when each lane without a live owner was first
	// seen so. Both are pruned to the open lanes on every plan.
	left, unowned map[string]time.Time
	most          int // the most lanes served at once (tests)
}

func newServedLanes(maxLanes int) *servedLanes {
	return &servedLanes{max: maxLanes, lanes: map[string]*servedLane{}, left: map[string]time.Time{}, unowned: map[string]time.Time{}}
}

func (s *servedLanes) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.lanes)
}

func (s *servedLanes) serving(token string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.lanes[token]
	return ok
}

// take counts the lane as served if this replica serves fewer than target
// and did not hand it over in the last lease; nil if not.
func (s *servedLanes) take(token string, target int, now time.Time) *servedLane {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.lanes[token]; ok || len(s.lanes) >= target {
		return nil
	}
	if at, ok := s.left[token]; ok && now.Sub(at) < laneLease {
		return nil
	}
	sl := &servedLane{since: now}
	s.lanes[token] = sl
	s.most = max(s.most, len(s.lanes))
	return sl
}

// drop forgets a lane no longer served; handedOver: it was given up to
// another replica.
func (s *servedLanes) drop(token string, handedOver bool, now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.lanes, token)
	if handedOver {
		s.left[token] = now
	}
}

// plan reckons this replica's target from the open lanes in view and marks
// the lanes to hand over.
func (s *servedLanes) plan(all map[string]meetingEntry, self string, replicas int, now time.Time) (target int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	open, waiting := 0, false
	for token, e := range all {
		if e.rec.Kind != kindLane || e.rec.State != laneOpen {
			continue
		}
		open++
		if e.rec.Owner == self || (e.rec.Owner != "" && now.Before(e.rec.LeaseUntil)) {
			delete(s.unowned, token)
			continue
		}
		first, ok := s.unowned[token]
		if !ok {
			s.unowned[token] = now
			first = now
		}
		waiting = waiting || now.Sub(first) >= laneLease
	}
	for token := range s.unowned {
		if e, ok := all[token]; !ok || e.rec.State != laneOpen {
			delete(s.unowned, token)
		}
	}
	for token, at := range s.left {
		if _, ok := all[token]; !ok || now.Sub(at) >= laneLease {
			delete(s.left, token)
		}
	}
	replicas = max(1, replicas)
	target = min(s.max, (open+replicas-1)/replicas)

	staying := make([]string, 0, len(s.lanes))
	for token, sl := range s.lanes {
		if !sl.leave.Load() {
			staying = append(staying, token)
		}
	}
	slices.SortFunc(staying, func(a, b string) int { return s.lanes[a].since.Compare(s.lanes[b].since) })
	excess := len(staying) - target
	if excess <= 0 && waiting && len(staying) >= s.max && len(staying) > 0 && now.Sub(s.lanes[staying[0]].since) >= laneTurnover {
		excess = 1 // at the cap while a lane waits: its turn
	}
	for _, token := range staying[:max(0, min(excess, len(staying)))] {
		s.lanes[token].leave.Store(true)
	}
	return target
}
