package worker

import (
	"context"
	"time"
)

// stepPark parks a command taken in that must not be called yet (not before
// its notBefore, nor while its meeting is known to wait), lets one call per
// meeting go at a time, and has a command of a held tenant join its hold.
func (p *pipeline) stepPark(ctx context.Context, a *attempt) (verdict, bool) {
	d, del, rec, deadline, now := a.d, a.del, a.rec, a.deadline, a.now
	if t := del.intakeTurn; t != nil {
		// The tenant's earlier deliveries on this replica decide first: the
		// lane, the meeting's parking and the grants keep their order.
		select {
		case <-t.after:
		case <-ctx.Done():
		}
	}

	// parking: not before notBefore, and not while the meeting is known to wait
	if del.intake() {
		if nb := d.Cmd.NotBefore; nb != nil && now.Before(*nb) {
			return parkUntilNotBefore(*nb, rec.Attempts, deadline), true
		}
		if v, parked := p.parkIfWaiting(d, rec, deadline, now); parked {
			return v, true
		}
		// One call per meeting at a time on this replica: its answer decides
		// for the rest. They wait for it as long as it may take (its grant
		// included, however long the grant queue), so that a burst for a
		// meeting that has not started costs one call, not one per grant wait.
		//
		// A command that waits here gives up its place among its tenant's
		// (its intake turn, its lane's grant turn and its count in the lane's
		// pipeline): the meeting's first answer may take as long as a grant
		// queue, and the tenant's commands for other meetings go on meanwhile.
		token := meetingToken(d.EnterpriseID, d.Cmd.MeetingRoomNumber)
		rejoin := false
		leave := p.gate.enter(token, p.idem.grantWait+p.idem.lease, func() {
			if t := del.intakeTurn; t != nil {
				t.done()
			}
			if t := del.turn; t != nil {
				t.done()
				del.turn = nil
			}
			if del.laneLeave != nil {
				del.laneLeave()
				del.laneLeave, rejoin = nil, true
			}
		})
		a.onDone(leave)
		if v, parked := p.parkIfWaiting(d, rec, deadline, p.now()); parked {
			return v, true
		}
		if rejoin && p.lanes != nil {
			// Going on to a call: counted in the tenant's pipeline again.
			a.onDone(p.lanes.join(d.EnterpriseID))
		}
	}
	if nb := d.Cmd.NotBefore; nb != nil && now.Before(*nb) {
		return retryIn(nb.Sub(now)), true
	}

	// breaker at intake (checked again after the grant, in the gate: step_grant.go)
	if del.intake() && p.parker.holding(d.EnterpriseID) {
		// The tenant's commands are held (its breaker is open, or its held
		// commands are not all released yet): join them, in order.
		until := now
		if u, open := p.breaker.Open(d.EnterpriseID); open {
			until = u
		}
		return holdUntil(until, rec.Attempts, deadline), true
	}
	return verdict{}, false
}

// parkIfWaiting parks a command whose meeting is known to wait: by the shared
// meetings bucket, or by an answer on this replica a moment ago.
func (p *pipeline) parkIfWaiting(d *Decoded, rec commandRecord, deadline, now time.Time) (verdict, bool) {
	m, waiting := p.parker.waiting(d.EnterpriseID, d.Cmd.MeetingRoomNumber)
	if !waiting && !p.gate.hinted(meetingToken(d.EnterpriseID, d.Cmd.MeetingRoomNumber), now) {
		return verdict{}, false
	}
	first := m.NextProbeAt
	if first.IsZero() {
		first = now.Add(p.parker.backoff.Delay(1))
	}
	return parkUnder(first, rec.Attempts, deadline), true
}
