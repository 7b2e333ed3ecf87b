package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"
)

// ErrLate: the request could not leave within its grant's departure window
// (see Departure). It must not be sent on this grant; ask for another.
var ErrLate = errors.New("ratelimit: the grant's departure window has passed")

// Departure is when a granted request may leave, on this replica's monotonic
// clock: not before From (the departure the dispenser spaced, as this replica
// bounds it) and not after By (that departure plus the grant's budget). The
// zero Departure has no bounds (a Local limiter's, or a Wait that held the
// grant itself).
//
// Everything between the dispenser's decision and the request's write spends
// the one budget: the grant's way here beyond the usual, a slow "sent" mark,
// a pause of this process, a fresh TLS dial. So the check belongs right
// before the request is written: Check.
type Departure struct {
	From, By time.Time
	// decided is the latest the dispenser can have decided the grant, from
	// which this replica's readiness is measured (see transitTimes.ready).
	decided time.Time
	t       *transitTimes
	stale   *atomic.Int64 // the requester's Stats.Stale
	// place is the grant's request's place in its dispenser's queue: a Wait
	// given this Departure again (TakeDeparture) asks at that place, before
	// the requests that came after it.
	place Place
}

// Leave waits for From and reports ErrLate when By has passed. The time the
// caller took to be ready teaches this replica its lead (the next grants'
// From comes that long after their decision).
func (d *Departure) Leave(ctx context.Context) error {
	if d == nil || d.From.IsZero() {
		return nil
	}
	now := time.Now()
	if d.t != nil {
		d.t.ready(now.Sub(d.decided))
		d.t = nil // one sample per grant
	}
	if wait := d.From.Sub(now); wait > 0 {
		timer := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			timer.Stop()
			return ctx.Err()
		case <-timer.C:
		}
	}
	return d.Check()
}

// Check reports ErrLate when the window has passed: the last check, right
// before the request's first byte is written.
func (d *Departure) Check() error {
	if d == nil || d.By.IsZero() {
		return nil
	}
	if late := time.Since(d.By); late > 0 {
		if d.stale != nil {
			d.stale.Add(1)
			d.stale = nil // one grant, counted once
		}
		return fmt.Errorf("%w (by %s)", ErrLate, late.Round(time.Microsecond))
	}
	return nil
}
