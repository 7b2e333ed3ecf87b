package worker

import (
	"context"
	"errors"
	"testing"
	"time"
)

// The meeting record's table as a state × event table: every state a record
// can be in (with the claims that matter) against every event, with the row
// that must apply ("" for a refusal), and what each row sets.
func TestMeetingStateTable(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	at := func(d time.Duration) time.Time { return now.Add(d) }
	const me, other = "replica-a", "replica-b"

	waiting := meetingRecord{EnterpriseID: "e", Meeting: "m", State: meetingWaiting, Probes: 2, NextProbeAt: at(-time.Second),
		EarliestDeadline: at(time.Hour), WaitingSince: at(-time.Hour), Parks: 3}
	notDue := waiting
	notDue.NextProbeAt = at(time.Minute)
	claimed := waiting
	claimed.LeaseUntil = at(time.Minute)
	hold := waiting
	hold.Kind, hold.Meeting = kindHold, ""
	released := waiting
	released.State, released.ReleasedAt = meetingReleased, at(-time.Minute)
	lane := meetingRecord{Kind: kindLane, EnterpriseID: "e", State: laneOpen, WaitingSince: at(-time.Minute)}
	laneMine := lane
	laneMine.Owner, laneMine.LeaseUntil = me, at(3*time.Second)
	laneOther := lane
	laneOther.Owner, laneOther.LeaseUntil = other, at(3*time.Second)
	laneLapsed := laneOther
	laneLapsed.LeaseUntil = at(-time.Second)

	states := []struct {
		name string
		rec  *meetingRecord
	}{
		{"absent", nil}, {"waiting", &waiting}, {"waiting, not due", &notDue}, {"waiting, claimed", &claimed},
		{"hold waiting", &hold}, {"released", &released}, {"lane", &lane}, {"lane, mine", &laneMine},
		{"lane, another's", &laneOther}, {"lane, another's lapsed", &laneLapsed},
	}

	// The events, each as its caller makes it; the park and lane events carry
	// the kind their token has (tokens are per kind).
	type event struct {
		name   string
		change func(r *meetingRecord) meetingChange
	}
	kindOf := func(r *meetingRecord, def string) string {
		if r == nil {
			return def
		}
		return r.Kind
	}
	events := []event{
		{"park", func(r *meetingRecord) meetingChange {
			return meetingChange{event: evPark, kind: kindOf(r, kindMeeting), enterpriseID: "e", meeting: "m",
				first: at(30 * time.Second), deadline: at(30 * time.Minute), notBefore: at(30 * time.Second)}
		}},
		{"claim-probe", func(*meetingRecord) meetingChange {
			return meetingChange{event: evClaim, lease: at(time.Minute)}
		}},
		{"reschedule", func(*meetingRecord) meetingChange {
			return meetingChange{event: evReschedule, next: at(10 * time.Second), countProbe: true}
		}},
		{"release", func(*meetingRecord) meetingChange { return meetingChange{event: evRelease} }},
		{"forget, by the claimant", func(*meetingRecord) meetingChange {
			return meetingChange{event: evForget, claimant: true}
		}},
		{"forget, by another", func(*meetingRecord) meetingChange { return meetingChange{event: evForget} }},
		{"set-earliest-deadline", func(r *meetingRecord) meetingChange {
			c := meetingChange{event: evSetEarliest, earliest: at(2 * time.Hour)}
			if r != nil {
				c.parksSeen = r.Parks
			}
			return c
		}},
		{"let-out-done", func(*meetingRecord) meetingChange { return meetingChange{event: evLetOutDone} }},
		{"lane-open", func(r *meetingRecord) meetingChange {
			return meetingChange{event: evLaneOpen, kind: kindOf(r, kindLane), enterpriseID: "e"}
		}},
		{"lane-own", func(*meetingRecord) meetingChange {
			return meetingChange{event: evLaneOwn, replica: me, lease: at(5 * time.Second)}
		}},
		{"lane-renew", func(r *meetingRecord) meetingChange {
			return meetingChange{event: evLaneRenew, kind: kindOf(r, kindLane), enterpriseID: "e", replica: me, lease: at(5 * time.Second)}
		}},
		{"lane-leave", func(*meetingRecord) meetingChange { return meetingChange{event: evLaneLeave, replica: me} }},
		{"lane-close", func(*meetingRecord) meetingChange { return meetingChange{event: evLaneClose, replica: me} }},
	}

	// The row expected for each state and event; a missing entry is a refusal.
	waitingRows := map[string]string{"park": "park-again", "claim-probe": "claim-probe", "reschedule": "reschedule",
		"release": "release", "forget, by the claimant": "forget", "forget, by another": "forget",
		"set-earliest-deadline": "set-earliest-deadline"}
	without := func(m map[string]string, drop ...string) map[string]string {
		out := map[string]string{}
		for k, v := range m {
			out[k] = v
		}
		for _, d := range drop {
			delete(out, d)
		}
		return out
	}
	want := map[string]map[string]string{
		"absent":                 {"park": "create-on-park", "lane-open": "lane-open", "lane-renew": "lane-renew-recreate"},
		"waiting":                waitingRows,
		"waiting, not due":       without(waitingRows, "claim-probe"),
		"waiting, claimed":       without(waitingRows, "claim-probe", "forget, by another"),
		"hold waiting":           waitingRows,
		"released":               {"park": "wait-again", "let-out-done": "let-out-done"},
		"lane":                   {"lane-own": "lane-own", "lane-renew": "lane-renew"},
		"lane, mine":             {"lane-own": "lane-own", "lane-renew": "lane-renew", "lane-leave": "lane-leave", "lane-close": "lane-close"},
		"lane, another's":        {},
		"lane, another's lapsed": {"lane-own": "lane-own"},
	}

	// What each row sets, all of it: the record after it against the one before.
	type check func(t *testing.T, before, after *meetingRecord, c meetingChange)
	same := func(t *testing.T, before, after *meetingRecord, edit func(r *meetingRecord)) {
		t.Helper()
		w := *before
		edit(&w)
		if *after != w {
			t.Errorf("record after\n %+v\nwant\n %+v", *after, w)
		}
	}
	deleted := func(t *testing.T, _, after *meetingRecord, _ meetingChange) {
		if after != nil {
			t.Errorf("record kept: %+v, want it deleted", *after)
		}
	}
	sets := map[string]check{
		"create-on-park": func(t *testing.T, _, after *meetingRecord, c meetingChange) {
			same(t, &meetingRecord{}, after, func(r *meetingRecord) {
				*r = meetingRecord{Kind: c.kind, EnterpriseID: "e", Meeting: "m", State: meetingWaiting, NextProbeAt: c.first,
					EarliestDeadline: c.deadline, WaitingSince: now, Parks: 1}
			})
		},
		"park-again": func(t *testing.T, before, after *meetingRecord, c meetingChange) {
			same(t, before, after, func(r *meetingRecord) {
				r.Parks++
				r.EarliestDeadline = c.deadline
				if r.Kind == kindHold {
					r.NextProbeAt = c.first // later: the breaker's openUntil moved on
				} else {
					r.NextProbeAt = minTime(r.NextProbeAt, c.notBefore)
				}
			})
		},
		"wait-again": func(t *testing.T, before, after *meetingRecord, c meetingChange) {
			same(t, before, after, func(r *meetingRecord) {
				r.State, r.NextProbeAt, r.Probes, r.WaitingSince, r.ReleasedAt, r.LeaseUntil = meetingWaiting, c.first, 0, now, time.Time{}, time.Time{}
				r.EarliestDeadline, r.Parks = c.deadline, r.Parks+1
			})
		},
		"claim-probe": func(t *testing.T, before, after *meetingRecord, c meetingChange) {
			same(t, before, after, func(r *meetingRecord) { r.LeaseUntil = c.lease })
		},
		"reschedule": func(t *testing.T, before, after *meetingRecord, c meetingChange) {
			same(t, before, after, func(r *meetingRecord) { r.Probes, r.NextProbeAt, r.LeaseUntil = r.Probes+1, c.next, time.Time{} })
		},
		"release": func(t *testing.T, before, after *meetingRecord, c meetingChange) {
			same(t, before, after, func(r *meetingRecord) { r.State, r.ReleasedAt, r.LeaseUntil = meetingReleased, now, time.Time{} })
		},
		"forget": deleted,
		"set-earliest-deadline": func(t *testing.T, before, after *meetingRecord, c meetingChange) {
			same(t, before, after, func(r *meetingRecord) { r.EarliestDeadline = c.earliest })
		},
		"let-out-done": deleted,
		"lane-open": func(t *testing.T, _, after *meetingRecord, _ meetingChange) {
			same(t, &meetingRecord{}, after, func(r *meetingRecord) {
				*r = meetingRecord{Kind: kindLane, EnterpriseID: "e", State: laneOpen, WaitingSince: now}
			})
		},
		"lane-own": func(t *testing.T, before, after *meetingRecord, c meetingChange) {
			same(t, before, after, func(r *meetingRecord) { r.Owner, r.LeaseUntil = me, c.lease })
		},
		"lane-renew": func(t *testing.T, before, after *meetingRecord, c meetingChange) {
			same(t, before, after, func(r *meetingRecord) { r.Owner, r.LeaseUntil = me, c.lease })
		},
		"lane-renew-recreate": func(t *testing.T, _, after *meetingRecord, c meetingChange) {
			same(t, &meetingRecord{}, after, func(r *meetingRecord) {
				*r = meetingRecord{Kind: kindLane, EnterpriseID: "e", State: laneOpen, WaitingSince: now, Owner: me, LeaseUntil: c.lease}
			})
		},
		"lane-leave": func(t *testing.T, before, after *meetingRecord, _ meetingChange) {
			same(t, before, after, func(r *meetingRecord) { r.Owner, r.LeaseUntil = "", time.Time{} })
		},
		"lane-close": deleted,
	}
	for _, row := range meetingTable {
		if sets[row.name] == nil {
			t.Errorf("row %s has no check of what it sets", row.name)
		}
	}
	covered := map[meetingEvent]bool{}
	applied := map[string]bool{}
	for _, s := range states {
		for _, ev := range events {
			t.Run(s.name+"/"+ev.name, func(t *testing.T) {
				var before *meetingRecord
				if s.rec != nil {
					r := *s.rec
					before = &r
				}
				c := ev.change(before)
				c.now = now
				covered[c.event] = true
				row, rowErr := meetingRow(before, c)
				after, err := nextMeetingRecord(before, c)
				if before != nil && *before != *s.rec {
					t.Fatal("the table changed the record it was given")
				}
				wantRow := want[s.name][ev.name]
				if wantRow == "" {
					var te *meetingTransitionError
					if !errors.As(err, &te) || after != nil || te.Event != c.event {
						t.Fatalf("want a refusal, got record %+v, error %v", after, err)
					}
					return
				}
				if err != nil || rowErr != nil {
					t.Fatalf("want row %s, refused: %v", wantRow, err)
				}
				if row.name != wantRow {
					t.Fatalf("row %s applied, want %s", row.name, wantRow)
				}
				applied[row.name] = true
				sets[row.name](t, before, after, c)
			})
		}
	}
	for _, ev := range meetingEvents {
		if !covered[ev] {
			t.Errorf("event %s not in the test's events", ev)
		}
	}
	for _, row := range meetingTable {
		if !applied[row.name] {
			t.Errorf("row %s applied in no state", row.name)
		}
	}
}

// The rows whose result depends on more than the state.
func TestMeetingStateRowDetails(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	hold := meetingRecord{Kind: kindHold, EnterpriseID: "e", State: meetingWaiting, NextProbeAt: now.Add(time.Minute),
		EarliestDeadline: now.Add(time.Hour), Parks: 1}

	// A hold's next probe follows the breaker's openUntil later, never earlier.
	for _, tc := range []struct {
		first, want time.Time
	}{{now.Add(2 * time.Minute), now.Add(2 * time.Minute)}, {now.Add(30 * time.Second), now.Add(time.Minute)}} {
		r, err := nextMeetingRecord(&hold, meetingChange{event: evPark, now: now, kind: kindHold, first: tc.first, deadline: now.Add(2 * time.Hour)})
		if err != nil || !r.NextProbeAt.Equal(tc.want) || !r.EarliestDeadline.Equal(hold.EarliestDeadline) || r.Parks != 2 {
			t.Errorf("hold parked again with first %v: %+v, %v; want next probe %v, deadline kept, 2 parks", tc.first, r, err, tc.want)
		}
	}
	// A meeting's next probe comes no later than a new command's notBefore;
	// a first without one (a guess from the view) moves nothing.
	meeting := hold
	meeting.Kind, meeting.Meeting = kindMeeting, "m"
	for _, tc := range []struct {
		first, notBefore, want time.Time
	}{
		{now.Add(2 * time.Minute), now.Add(2 * time.Minute), now.Add(time.Minute)},
		{now.Add(30 * time.Second), now.Add(30 * time.Second), now.Add(30 * time.Second)},
		{now.Add(-time.Minute), time.Time{}, now.Add(time.Minute)},
	} {
		r, err := nextMeetingRecord(&meeting, meetingChange{event: evPark, now: now, kind: kindMeeting, first: tc.first,
			notBefore: tc.notBefore, deadline: now.Add(2 * time.Hour)})
		if err != nil || !r.NextProbeAt.Equal(tc.want) {
			t.Errorf("meeting parked again with first %v, notBefore %v: %+v, %v; want next probe %v", tc.first, tc.notBefore, r, err, tc.want)
		}
	}
	// A command parked under another kind's record is refused.
	if _, err := nextMeetingRecord(&hold, meetingChange{event: evPark, now: now, kind: kindMeeting}); !refused(err) {
		t.Errorf("a meeting's park on a hold's record: %v, want a refusal", err)
	}
	// A scan's earliest deadline replaces the record's, unless a command was
	// parked since the scan began: that one's deadline may be earlier.
	early := hold
	early.EarliestDeadline, early.Parks = now.Add(10*time.Minute), 2
	r, err := nextMeetingRecord(&early, meetingChange{event: evSetEarliest, now: now, earliest: now.Add(time.Hour), parksSeen: 1})
	if err != nil || !r.EarliestDeadline.Equal(early.EarliestDeadline) {
		t.Errorf("deadline set over a park during the scan: %+v, %v; want %v kept", r, err, early.EarliestDeadline)
	}
	// A claim is due at the earliest deadline too.
	expiring := hold
	expiring.NextProbeAt, expiring.EarliestDeadline = now.Add(time.Hour), now.Add(-time.Second)
	if _, err := nextMeetingRecord(&expiring, meetingChange{event: evClaim, now: now, lease: now.Add(time.Minute)}); err != nil {
		t.Errorf("claim of a meeting whose earliest deadline passed: %v", err)
	}
}

// The bucket side: a pinned change writes at the revision read or not at all,
// a refused one writes nothing, and an unpinned change that needs a revision
// is refused.
func TestMeetingStateWrites(t *testing.T) {
	pp := startParkingParts(t)
	ctx := context.Background()
	kv := pp.p.meetings
	token := meetingToken("ent", "m-writes")
	pp.parkOne(t, "m-writes", 1, time.Now().Add(time.Hour))
	r, rev, err := readMeeting(ctx, kv, token)
	if err != nil || r == nil || r.Parks != 1 {
		t.Fatalf("record after a park: %+v, %v", r, err)
	}
	pp.parkOne(t, "m-writes", 2, time.Now().Add(2*time.Hour))
	now := time.Now()
	if _, err := applyMeetingAt(ctx, kv, token, r, rev, meetingChange{event: evForget, now: now, claimant: true}); err == nil {
		t.Fatal("a forget at a revision a park moved on deleted the record")
	}
	r2, rev2, _ := readMeeting(ctx, kv, token)
	if r2 == nil || r2.Parks != 2 {
		t.Fatalf("record after two parks: %+v", r2)
	}
	if _, err := applyMeeting(ctx, kv, token, meetingChange{event: evLaneLeave, now: now, replica: "x"}); !refused(err) {
		t.Fatalf("a lane event on a meeting's record: %v, want a refusal", err)
	}
	if _, err := applyMeeting(ctx, kv, token, meetingChange{event: evForget, now: now, claimant: true}); err == nil || refused(err) {
		t.Fatalf("an unpinned forget: %v, want it refused for want of a revision", err)
	}
	if _, rev3, _ := readMeeting(ctx, kv, token); rev3 != rev2 {
		t.Fatalf("refused changes wrote: revision %d, was %d", rev3, rev2)
	}
	// A park from an old copy (the view behind) applies to the record as it is.
	park := meetingChange{event: evPark, now: now, kind: kindMeeting, enterpriseID: "ent", meeting: "m-writes",
		first: now.Add(time.Minute), deadline: now.Add(3 * time.Hour)}
	if out, err := applyMeetingFrom(ctx, kv, token, r, rev, park); err != nil || out.Parks != 3 {
		t.Fatalf("park from an old copy: %+v, %v; want 3 parks", out, err)
	}
	if out, err := applyMeetingFrom(ctx, kv, meetingToken("ent", "m-new"), nil, 0, park); err != nil || out.Parks != 1 {
		t.Fatalf("park of a meeting without a record: %+v, %v", out, err)
	}
}
