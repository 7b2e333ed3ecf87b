package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// The lifecycle of a record of the meetings bucket, in one table. A record is a
// waiting meeting (kind ""), a held tenant (kind "breaker") or a tenant's lane
// (kind "lane"); a meeting or hold is waiting or released, a lane is open.
//
//	             park (create-on-park)          claim-probe, reschedule,
//	  (none) ─────────────────────────▶ waiting ◀── park-again, set-earliest-deadline
//	     ▲  ◀──────── forget ──────────    │  ▲
//	     │                       release   │  │ park (wait-again)
//	     │                                 ▼  │
//	     └──────── let-out-done ────── released
//
//	  (none) ── lane-open, lane-renew ──▶ lane ◀── lane-own, lane-renew, lane-leave
//	     ▲                                 │
//	     └────────── lane-close ───────────┘
//
// Every write of a record is one row of meetingTable: a compare-and-swap of the
// record that requires its kind, state and claim (lease, owner), and sets all
// that the new state has at once. A change the table has no row for, or whose
// row's requirements the record does not meet, is refused with a
// *meetingTransitionError and writes nothing.

// meetingEvent names what happens to a record.
type meetingEvent string

const (
	evPark        meetingEvent = "park"                  // a command was stored under the meeting or hold
	evClaim       meetingEvent = "claim-probe"           // a replica takes the due probe
	evReschedule  meetingEvent = "reschedule"            // the probe is over (or given back): the next one is set
	evRelease     meetingEvent = "release"               // the API answered: the parked commands may go
	evForget      meetingEvent = "forget"                // nothing is parked any more
	evSetEarliest meetingEvent = "set-earliest-deadline" // the probe scanned the parked commands' deadlines
	evLetOutDone  meetingEvent = "let-out-done"          // a released meeting's commands are all out
	evLaneOpen    meetingEvent = "lane-open"             // a command was stored in a lane without a record
	evLaneOwn     meetingEvent = "lane-own"              // a replica takes a lane without a live owner
	evLaneRenew   meetingEvent = "lane-renew"            // the lane's owner extends its lease
	evLaneLeave   meetingEvent = "lane-leave"            // the owner gives the lane up
	evLaneClose   meetingEvent = "lane-close"            // the lane is empty
)

// meetingEvents lists every event, in the table's order.
var meetingEvents = []meetingEvent{evPark, evClaim, evReschedule, evRelease, evForget, evSetEarliest, evLetOutDone,
	evLaneOpen, evLaneOwn, evLaneRenew, evLaneLeave, evLaneClose}

// stateAbsent is the state of a key without a record.
const stateAbsent = "(none)"

// meetingChange is an event with what it carries.
type meetingChange struct {
	event meetingEvent
	now   time.Time
	// The record to create (park, lane-open, lane-renew): its kind and names.
	kind, enterpriseID, meeting string
	// park: when the command's first probe may run, its deadline, and its
	// notBefore when that is ahead (zero: none).
	first, deadline, notBefore time.Time
	// park: the command waits only for its notBefore; it says nothing of
	// the meeting (a record it creates is NotBeforeOnly).
	ahead bool
	// reschedule: the next probe; countProbe counts the probe that ended.
	next       time.Time
	countProbe bool
	// claim-probe, lane-own, lane-renew: until when the claim holds.
	lease time.Time
	// set-earliest-deadline: the earliest deadline left, and the record's
	// Parks when the scan began (a command parked since may be earlier).
	earliest  time.Time
	parksSeen int
	// Lane events: the replica.
	replica string
	// forget: the caller holds the probe claim.
	claimant bool
}

// claimRule is what a transition requires of the record's claim.
type claimRule int

const (
	claimAny          claimRule = iota
	claimFree                   // no live probe claim
	claimFreeOrHolder           // the caller holds the probe claim, or none is live
	ownerLapsedOrMe             // no lane owner, one whose lease lapsed, or this replica
	ownerNoneOrMe               // no lane owner, or this replica
	ownerMe                     // this replica owns the lane
)

// meetingTransition is a row of the table.
type meetingTransition struct {
	name  string
	event meetingEvent
	from  string   // the state required (stateAbsent: no record)
	kinds []string // the kinds it applies to: the record's, or the one created
	claim claimRule
	due   bool // the probe is due (its next probe time or earliest deadline passed)
	// pinned: one compare-and-swap at the revision the caller read, never
	// retried, since the caller checked something against that revision (the
	// record it saw due, or a parked subject it found empty).
	pinned bool
	// set returns the record after the transition; nil deletes it.
	set func(r meetingRecord, c meetingChange) *meetingRecord
}

var parkedKinds = []string{kindMeeting, kindHold}

var meetingTable = []meetingTransition{
	{name: "create-on-park", event: evPark, from: stateAbsent, kinds: parkedKinds,
		set: func(_ meetingRecord, c meetingChange) *meetingRecord {
			r := meetingRecord{Kind: c.kind, EnterpriseID: c.enterpriseID, Meeting: c.meeting, State: meetingWaiting,
				NextProbeAt: c.first, EarliestDeadline: c.deadline, WaitingSince: c.now, Parks: 1, NotBeforeOnly: c.ahead}
			if c.kind == kindHold {
				r.Meeting = ""
			}
			return &r
		}},
	// Every park writes the record (Parks), so that a forget that read it
	// before fails (see prober.forget). A meeting's next probe comes no later
	// than the command's notBefore. (Its first otherwise is a guess from the
	// view, which may be behind the record: it moves nothing.)
	{name: "park-again", event: evPark, from: meetingWaiting, kinds: parkedKinds,
		set: func(r meetingRecord, c meetingChange) *meetingRecord {
			switch {
			case c.kind == kindHold && c.first.After(r.NextProbeAt):
				r.NextProbeAt = c.first // the breaker's openUntil moved on
			case c.kind == kindMeeting && !c.notBefore.IsZero():
				r.NextProbeAt = minTime(r.NextProbeAt, c.notBefore)
			}
			if r.NotBeforeOnly && !c.ahead {
				// A command parked for the meeting itself (it answered 66620):
				// the meeting waits, probed from this command's first probe
				// on, not from the other commands' notBefore.
				r.NotBeforeOnly, r.NextProbeAt = false, minTime(r.NextProbeAt, c.first)
			}
			r.EarliestDeadline = minTime(r.EarliestDeadline, c.deadline)
			r.Parks++
			return &r
		}},
	// Released, yet the meeting said 66620 again (it ended, or flapped), or
	// the tenant was held again: it waits again, from the start.
	{name: "wait-again", event: evPark, from: meetingReleased, kinds: parkedKinds,
		set: func(r meetingRecord, c meetingChange) *meetingRecord {
			if c.ahead {
				// Waiting only for its notBefore: the meeting stays released,
				// its letting out takes the command and holds it until then.
				r.Parks++
				return &r
			}
			r.State, r.NextProbeAt, r.Probes, r.WaitingSince = meetingWaiting, c.first, 0, c.now
			r.ReleasedAt, r.LeaseUntil = time.Time{}, time.Time{}
			r.EarliestDeadline = minTime(r.EarliestDeadline, c.deadline)
			r.Parks++
			return &r
		}},
	{name: "claim-probe", event: evClaim, from: meetingWaiting, kinds: parkedKinds, claim: claimFree, due: true, pinned: true,
		set: func(r meetingRecord, c meetingChange) *meetingRecord {
			r.LeaseUntil = c.lease
			return &r
		}},
	{name: "reschedule", event: evReschedule, from: meetingWaiting, kinds: parkedKinds,
		set: func(r meetingRecord, c meetingChange) *meetingRecord {
			if c.countProbe {
				r.Probes++
				r.NotBeforeOnly = false // it answered 66620: the meeting waits
			}
			r.NextProbeAt, r.LeaseUntil = c.next, time.Time{}
			return &r
		}},
	{name: "release", event: evRelease, from: meetingWaiting, kinds: parkedKinds,
		set: func(r meetingRecord, c meetingChange) *meetingRecord {
			r.State, r.ReleasedAt, r.LeaseUntil = meetingReleased, c.now, time.Time{}
			return &r
		}},
	{name: "forget", event: evForget, from: meetingWaiting, kinds: parkedKinds, claim: claimFreeOrHolder, pinned: true,
		set: func(meetingRecord, meetingChange) *meetingRecord { return nil }},
	// A command parked during the scan may have an earlier deadline than the
	// scan found: then the earlier of both is kept.
	{name: "set-earliest-deadline", event: evSetEarliest, from: meetingWaiting, kinds: parkedKinds,
		set: func(r meetingRecord, c meetingChange) *meetingRecord {
			if r.Parks == c.parksSeen {
				r.EarliestDeadline = c.earliest
			} else {
				r.EarliestDeadline = minTime(r.EarliestDeadline, c.earliest)
			}
			return &r
		}},
	{name: "let-out-done", event: evLetOutDone, from: meetingReleased, kinds: parkedKinds, pinned: true,
		set: func(meetingRecord, meetingChange) *meetingRecord { return nil }},
	{name: "lane-open", event: evLaneOpen, from: stateAbsent, kinds: []string{kindLane},
		set: func(_ meetingRecord, c meetingChange) *meetingRecord {
			return &meetingRecord{Kind: kindLane, EnterpriseID: c.enterpriseID, State: laneOpen, WaitingSince: c.now}
		}},
	{name: "lane-own", event: evLaneOwn, from: laneOpen, kinds: []string{kindLane}, claim: ownerLapsedOrMe, pinned: true,
		set: func(r meetingRecord, c meetingChange) *meetingRecord {
			r.Owner, r.LeaseUntil = c.replica, c.lease
			return &r
		}},
	// The record of a lane not known to be empty is created again.
	{name: "lane-renew-recreate", event: evLaneRenew, from: stateAbsent, kinds: []string{kindLane},
		set: func(_ meetingRecord, c meetingChange) *meetingRecord {
			return &meetingRecord{Kind: kindLane, EnterpriseID: c.enterpriseID, State: laneOpen, WaitingSince: c.now,
				Owner: c.replica, LeaseUntil: c.lease}
		}},
	{name: "lane-renew", event: evLaneRenew, from: laneOpen, kinds: []string{kindLane}, claim: ownerNoneOrMe,
		set: func(r meetingRecord, c meetingChange) *meetingRecord {
			r.Owner, r.LeaseUntil = c.replica, c.lease
			return &r
		}},
	{name: "lane-leave", event: evLaneLeave, from: laneOpen, kinds: []string{kindLane}, claim: ownerMe,
		set: func(r meetingRecord, _ meetingChange) *meetingRecord {
			r.Owner, r.LeaseUntil = "", time.Time{}
			return &r
		}},
	{name: "lane-close", event: evLaneClose, from: laneOpen, kinds: []string{kindLane}, claim: ownerMe, pinned: true,
		set: func(meetingRecord, meetingChange) *meetingRecord { return nil }},
}

// meetingTransitionError: the table has no row for the event in the record's
// state, or the record does not meet the row's requirements. Nothing was
// written.
type meetingTransitionError struct {
	Event       meetingEvent
	State, Kind string
	Why         string
}

func (e *meetingTransitionError) Error() string {
	return fmt.Sprintf("meeting record: %s refused in state %s (kind %q): %s", e.Event, e.State, e.Kind, e.Why)
}

// refused reports whether err is a refusal of the table.
func refused(err error) bool {
	var te *meetingTransitionError
	return errors.As(err, &te)
}

// meetingRow finds the row of the change's event for the record (nil: none).
func meetingRow(r *meetingRecord, c meetingChange) (meetingTransition, error) {
	state, kind := stateAbsent, c.kind
	if r != nil {
		state, kind = r.State, r.Kind
	}
	refuse := func(why string) (meetingTransition, error) {
		return meetingTransition{}, &meetingTransitionError{Event: c.event, State: state, Kind: kind, Why: why}
	}
	i := slices.IndexFunc(meetingTable, func(t meetingTransition) bool { return t.event == c.event && t.from == state })
	if i < 0 {
		return refuse("no transition from this state")
	}
	t := meetingTable[i]
	if !slices.Contains(t.kinds, kind) {
		return refuse("not for this kind of record")
	}
	if r == nil {
		return t, nil
	}
	if c.event == evPark && r.Kind != c.kind {
		return refuse("parked as another kind")
	}
	switch t.claim {
	case claimFree:
		if c.now.Before(r.LeaseUntil) {
			return refuse("its probe is claimed")
		}
	case claimFreeOrHolder:
		if !c.claimant && c.now.Before(r.LeaseUntil) {
			return refuse("its probe is claimed")
		}
	case ownerLapsedOrMe:
		if r.Owner != "" && r.Owner != c.replica && c.now.Before(r.LeaseUntil) {
			return refuse("another replica owns the lane")
		}
	case ownerNoneOrMe:
		if r.Owner != "" && r.Owner != c.replica {
			return refuse("another replica owns the lane")
		}
	case ownerMe:
		if r.Owner != c.replica {
			return refuse("the lane is not this replica's")
		}
	}
	if t.due && c.now.Before(r.NextProbeAt) && c.now.Before(r.EarliestDeadline) {
		return refuse("its probe is not due")
	}
	return t, nil
}

// nextMeetingRecord is the table's pure part: the record after the change (r
// nil: there is none; nil returned: it is deleted), or a refusal.
func nextMeetingRecord(r *meetingRecord, c meetingChange) (*meetingRecord, error) {
	t, err := meetingRow(r, c)
	if err != nil {
		return nil, err
	}
	var cur meetingRecord
	if r != nil {
		cur = *r
	}
	return t.set(cur, c), nil
}

// readMeeting reads a record and its revision (0 and a nil record: none).
func readMeeting(ctx context.Context, kv jetstream.KeyValue, token string) (*meetingRecord, uint64, error) {
	e, err := kv.Get(ctx, token)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, err
	}
	var r meetingRecord
	if err := json.Unmarshal(e.Value(), &r); err != nil {
		return nil, 0, fmt.Errorf("meeting record %s: %w", token, err)
	}
	return &r, e.Revision(), nil
}

// applyMeeting carries out an unpinned change: it reads the record, applies
// the table, and writes with compare-and-swap; when another writer came in
// between, it reads and applies again. It returns the record as written
// (deleted: as it was), or as it was when refused.
func applyMeeting(ctx context.Context, kv jetstream.KeyValue, token string, c meetingChange) (meetingRecord, error) {
	for {
		r, rev, err := readMeeting(ctx, kv, token)
		if err != nil {
			return meetingRecord{}, err
		}
		if t, err := meetingRow(r, c); err == nil && t.pinned {
			return meetingRecord{}, fmt.Errorf("meeting record: %s needs the revision its caller read", c.event)
		}
		out, conflict, err := writeMeeting(ctx, kv, token, r, rev, c)
		if !conflict {
			return out, err
		}
		if ctx.Err() != nil {
			return out, ctx.Err()
		}
	}
}

// applyMeetingFrom is applyMeeting starting from a record already seen (seen
// at rev; nil and 0: none), such as the watched view's: one write and no
// read when nothing changed the record since. Otherwise (a conflict, or a
// refusal of what may be an old copy) it reads and applies as applyMeeting.
func applyMeetingFrom(ctx context.Context, kv jetstream.KeyValue, token string, seen *meetingRecord, rev uint64, c meetingChange) (meetingRecord, error) {
	if t, err := meetingRow(seen, c); err == nil && !t.pinned {
		out, _, err := writeMeeting(ctx, kv, token, seen, rev, c)
		if err == nil {
			return out, nil
		}
	}
	return applyMeeting(ctx, kv, token, c)
}

// applyMeetingAt carries out a change once, at the revision the caller read
// (seen nil and rev 0: it saw no record). A conflict is returned as an error.
func applyMeetingAt(ctx context.Context, kv jetstream.KeyValue, token string, seen *meetingRecord, rev uint64, c meetingChange) (meetingRecord, error) {
	out, _, err := writeMeeting(ctx, kv, token, seen, rev, c)
	return out, err
}

// writeMeeting applies the table to r (at rev) and writes the result at rev.
func writeMeeting(ctx context.Context, kv jetstream.KeyValue, token string, r *meetingRecord, rev uint64, c meetingChange) (meetingRecord, bool, error) {
	var cur meetingRecord
	if r != nil {
		cur = *r
	}
	next, err := nextMeetingRecord(r, c)
	if err != nil {
		return cur, false, err
	}
	if next == nil {
		err = kv.Delete(ctx, token, jetstream.LastRevision(rev))
		return cur, errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch), err
	}
	_, conflict, err := casWrite(ctx, kv, token, *next, rev)
	return *next, conflict, err
}
