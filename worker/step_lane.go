package worker

import "context"

// stepLane: a tenant whose commands already fill what its budget serves in the
// next seconds on this replica, or whose lane still holds commands, has this
// one moved to its lane rather than wait here holding a slot (unless the parked
// stream is full). A command that
// goes straight on holds its place in the tenant's pipeline, and its lane turn,
// until its verdict.
func (p *pipeline) stepLane(ctx context.Context, a *attempt) (verdict, bool) {
	d, del := a.d, a.del
	if del.kind != fromShared || p.lanes == nil {
		return verdict{}, false
	}
	leave, turn, lane := p.lanes.admit(d.EnterpriseID)
	if lane && p.parker != nil && p.parker.full() {
		// A lane is a place in the parked stream: while that is full the
		// command waits for its grant here, holding its slot, rather than be
		// refused or come back later.
		leave, turn = p.lanes.enter(d.EnterpriseID)
		lane = false
	}
	if lane {
		return toLane(a.rec.Attempts, a.deadline), true
	}
	a.onDone(leave)
	a.onDone(turn.done)
	del.turn = turn
	if t := del.intakeTurn; t != nil {
		t.done() // in the pipeline: the next may decide
	}
	return verdict{}, false
}
