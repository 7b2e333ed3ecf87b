package worker

import (
	"context"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/xygroup/xygroup/xylink"
)

// A command whose earlier request's outcome is unknown is tried for
// reconcileGrace past its deadline (a 66684 then reconciles it as created).
// Refused by this replica's breaker alone (it opened a moment before the
// cluster-wide record says so), the command must keep that grace: a failure
// at its deadline would report failed.unavailable for groups its earlier
// request may have created, without the retry that would tell.
func TestHeldByThisReplicasBreakerKeepsTheReconcileGrace(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sb, err := NewSharedBreaker(ctx, embeddedJS(t), 1, BreakerSettings{ConsecutiveFailures: 1, OpenFor: time.Hour}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	const ent = "ent-held-grace"
	// This replica's gobreaker open, the cluster-wide record not yet.
	local := newLocalBreaker(BreakerSettings{ConsecutiveFailures: 1, OpenFor: time.Hour}, zerolog.Nop())
	done, err := local.Allow(ent)
	if err != nil {
		t.Fatal(err)
	}
	done(xylink.Outcome{BreakerFailure: true})
	sb.mu.Lock()
	sb.local[ent], sb.gens[ent] = local, sb.shared[ent].Generation
	sb.mu.Unlock()
	if _, err := sb.Allow(ent); err == nil {
		t.Fatal("this replica's breaker allowed a call; want it open")
	}
	if _, open := sb.Open(ent); open {
		t.Fatal("the cluster-wide breaker is open; the test needs this replica's alone")
	}

	now := time.Now()
	p := &pipeline{breaker: sb, backoff: Backoff{Initial: time.Second, Max: 2 * time.Second}, now: func() time.Time { return now }}
	d := &Decoded{ID: "c-held-grace", Raw: []byte(`{"commandId":"c-held-grace"}`), Cmd: &Command{CommandID: "c-held-grace"},
		EnterpriseID: ent, MeetingRoomNumber: "910000000001"}
	deadline := now.Add(-10 * time.Second) // passed, within the grace
	for name, rec := range map[string]commandRecord{
		"unknown":   {Attempts: 2, Sent: 2, MaybeCreated: true},
		"lost-sent": {Attempts: 2, Sent: 2, PendingUntil: now.Add(-time.Second)},
	} {
		for _, kind := range []deliveryKind{fromShared, fromProbe, fromReleased} {
			v := p.held(d, &delivery{kind: kind}, rec, deadline, now)
			if v.ends() {
				t.Errorf("%s record, delivery from %v: refused by the breaker %s past its deadline, within the reconcile grace: ended %s; want a retry",
					name, kind, now.Sub(deadline), v.event.subject)
			}
		}
	}
	// Past the grace, or with no request of unknown outcome, the deadline ends it.
	if v := p.held(d, &delivery{kind: fromShared}, commandRecord{Attempts: 2, MaybeCreated: true}, now.Add(-reconcileGrace-time.Second), now); !v.ends() {
		t.Errorf("past the reconcile grace: %v; want the command ended", v.kind)
	}
	if v := p.held(d, &delivery{kind: fromShared}, commandRecord{Attempts: 2, Sent: 2}, deadline, now); !v.ends() {
		t.Errorf("no request of unknown outcome, past its deadline: %v; want the command ended", v.kind)
	}
}
