package worker

import (
	"sync"
	"time"
)

// meetingGate lets one call per meeting be in flight on this replica at a time,
// for commands of meetings with no record yet: the first answer (66620, usually)
// then decides for the others, which park without a call instead of all asking at
// once. A waiter gives up after a bound and calls anyway, so a slow API cannot
// hold many slots on one meeting.
type meetingGate struct {
	mu       sync.Mutex
	inFlight map[string]chan struct{}
	// hints: meetings that answered 66620 here, until the watched bucket shows them.
	hints map[string]time.Time
}

func newMeetingGate() *meetingGate {
	return &meetingGate{inFlight: map[string]chan struct{}{}, hints: map[string]time.Time{}}
}

// enter waits (at most maxWait) while another call for the meeting is in flight,
// then takes the gate; leave must be called after the answer is known. waiting,
// if not nil, is called once, before the first wait (not at all when the gate
// is free): what the caller holds that others wait for is given up there.
func (g *meetingGate) enter(token string, maxWait time.Duration, waiting func()) (leave func()) {
	timeout := time.After(maxWait)
	for {
		g.mu.Lock()
		ch, busy := g.inFlight[token]
		if !busy {
			ch = make(chan struct{})
			g.inFlight[token] = ch
			g.mu.Unlock()
			return func() {
				g.mu.Lock()
				delete(g.inFlight, token)
				g.mu.Unlock()
				close(ch)
			}
		}
		g.mu.Unlock()
		if waiting != nil {
			waiting()
			waiting = nil
		}
		select {
		case <-ch:
		case <-timeout:
			return func() {}
		}
	}
}

// hint records that the meeting answered 66620 just now.
func (g *meetingGate) hint(token string, now time.Time) {
	g.mu.Lock()
	g.hints[token] = now
	for t, at := range g.hints {
		if now.Sub(at) > 10*time.Second {
			delete(g.hints, t)
		}
	}
	g.mu.Unlock()
}

// hinted reports a recent 66620 of the meeting on this replica.
func (g *meetingGate) hinted(token string, now time.Time) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	at, ok := g.hints[token]
	return ok && now.Sub(at) < 10*time.Second
}
