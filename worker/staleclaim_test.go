package worker

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

// clock is a time source the test moves by hand.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

// startIdempotency is the command records' bucket on an embedded NATS server,
// with its clock.
func startIdempotency(t *testing.T) (*idempotency, *clock) {
	t.Helper()
	js := embeddedJS(t)
	kv, err := js.CreateKeyValue(context.Background(), StreamSettings{}.commandsBucket(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	c := &clock{t: time.Now()}
	return &idempotency{kv: kv, lease: 10 * time.Second, grantWait: 20 * time.Second, now: c.now}, c
}

// lapsedThenTaken begins a call (A), lets its claim lapse before its request
// was marked sent (its replica stalled in its grant wait, or lost NATS for
// longer than the lease), and has another replica begin (B). The lapsed
// attempt is given back, so B's claim carries A's attempt number.
func lapsedThenTaken(t *testing.T, s *idempotency, clk *clock, ref commandRef) (a, b claim) {
	t.Helper()
	ctx := context.Background()
	_, a, err := s.begin(ctx, ref, commandRecord{}, 0)
	if err != nil {
		t.Fatal(err)
	}
	clk.add(s.grantWait + s.lease + time.Second)
	rec, rev, err := s.get(ctx, ref)
	if err != nil {
		t.Fatal(err)
	}
	_, b, err = s.begin(ctx, ref, rec, rev)
	if err != nil {
		t.Fatalf("B could not begin after A's claim lapsed: %v", err)
	}
	return a, b
}

// The late writes of a replica whose claim lapsed act on its own claim only:
// its abort (the grant it waited for was refused once it came back) or its
// answer must not end the claim another replica holds now, or a third call
// begins while that one's request is out, and both leave.
func TestLapsedClaimLeavesTheNewClaimAlone(t *testing.T) {
	for name, late := range map[string]func(s *idempotency, ref commandRef, a claim) error{
		"abort": func(s *idempotency, ref commandRef, a claim) error {
			return s.abort(context.Background(), ref, a, false)
		},
		"end": func(s *idempotency, ref commandRef, a claim) error {
			return s.end(context.Background(), ref, a, false, failure{})
		},
	} {
		t.Run(name, func(t *testing.T) {
			s, clk := startIdempotency(t)
			ctx := context.Background()
			ref := commandRef{enterprise: "ent", id: "c-" + name}
			a, b := lapsedThenTaken(t, s, clk, ref)
			if err := late(s, ref, a); err != nil {
				t.Fatal(err)
			}
			if _, c, err := s.begin(ctx, ref, commandRecord{}, 0); !isBusy(err) {
				t.Fatalf("after A's late %s (attempt %d), a third call (attempt %d) began while B's claim (attempt %d) holds: err %v, want busy",
					name, a.attempt, c.attempt, b.attempt, err)
			}
			if err := s.markSent(ctx, ref, &b); err != nil {
				t.Fatalf("B's own claim was lost to A's late %s: %v", name, err)
			}
		})
	}
}

// A claim is told apart from the next one by more than its attempt number:
// a holder whose own clock still gives it its claim (it runs behind the
// clock of the replica that took the lapsed claim over) finds another's
// claim when its mark's compare-and-swap fails and it reads the record
// again, and its request does not leave.
func TestLapsedClaimCannotMarkSentOverANewClaim(t *testing.T) {
	s, clk := startIdempotency(t)
	ref := commandRef{enterprise: "ent", id: "c-skew"}
	a, b := lapsedThenTaken(t, s, clk, ref)
	clk.add(-(s.grantWait + s.lease)) // A's clock: its claim has a second left
	if err := s.markSent(context.Background(), ref, &a); !errors.Is(err, errLostClaim) {
		t.Fatalf("A (attempt %d) marked its request sent over B's claim (attempt %d): err %v, want errLostClaim; both requests leave",
			a.attempt, b.attempt, err)
	}
}
