package ratelimit

import (
	"context"
	"errors"
	"testing"
	"time"
)

const testBudget = defaultBudget

// grantAt feeds tr a grant sent at sent whose round trip took transit (no
// queue time) and returns its window.
func grantAt(tr *transitTimes, sent time.Time, transit, lead time.Duration) (Departure, bool) {
	return tr.window(nil, sent, sent.Add(transit), 0, lead, testBudget)
}

// On a steady network, fast or slow, a grant's window is the whole budget,
// starting lead after the latest its decision can have been.
func TestSteadyTransitGivesTheWholeBudget(t *testing.T) {
	for _, usual := range []time.Duration{300 * time.Microsecond, 30 * time.Millisecond} {
		var tr transitTimes
		sent := time.Now()
		var d Departure
		for i := range 10 {
			var ok bool
			sent = sent.Add(50 * time.Millisecond)
			if d, ok = grantAt(&tr, sent, usual, 40*time.Millisecond); !ok {
				t.Fatalf("transit %v: grant %d unusable", usual, i)
			}
		}
		if got := d.By.Sub(d.From); got != testBudget {
			t.Errorf("transit %v: window %v, want the budget %v", usual, got, testBudget)
		}
		if got, want := d.From, sent.Add(usual-usual/2+40*time.Millisecond); !got.Equal(want) {
			t.Errorf("transit %v: window from %v after sending, want %v", usual, got.Sub(sent), want.Sub(sent))
		}
	}
}

// A grant held on its way spends the budget: a little, and its window is
// shorter; more than the budget, and it is not used.
func TestHeldGrantSpendsTheBudget(t *testing.T) {
	var tr transitTimes
	sent := time.Now()
	grantAt(&tr, sent, 2*time.Millisecond, 0)
	d, ok := grantAt(&tr, sent.Add(50*time.Millisecond), 2*time.Millisecond+testBudget/2, 0)
	if !ok || d.By.Sub(d.From) != testBudget/2 {
		t.Fatalf("held half the budget: usable %v, window %v", ok, d.By.Sub(d.From))
	}
	if _, ok := grantAt(&tr, sent.Add(100*time.Millisecond), 2*time.Millisecond+testBudget+time.Millisecond, 0); ok {
		t.Fatal("a grant held longer than the budget is usable")
	}
}

// A network that got slower: after lateShift of unusable grants (at least
// lateRun), the shortest of them is the new base. A grant held much longer
// than the others of the run (20 ms slower link, then one grant held 500 ms
// more) is judged against that base, and not used.
func TestSlowerNetworkBecomesTheBaseButNotTheLatestGrant(t *testing.T) {
	var tr transitTimes
	sent := time.Now()
	fast, slow := 2*time.Millisecond, 42*time.Millisecond
	grantAt(&tr, sent, fast, 0)
	step := 60 * time.Millisecond
	for i := 1; i <= 5; i++ { // 240 ms of slower grants: still a pause
		if _, ok := grantAt(&tr, sent.Add(time.Duration(i)*step), slow, 0); ok {
			t.Fatalf("slower grant %d usable before lateShift", i)
		}
	}
	// The next comes lateShift after the run began: the run's shortest
	// becomes the base, and this grant is judged against it.
	if _, ok := grantAt(&tr, sent.Add(6*step), slow+500*time.Millisecond, 0); ok {
		t.Fatal("a grant held 500 ms more than the slower link's is usable once the link is the usual one")
	}
	if _, ok := grantAt(&tr, sent.Add(7*step+500*time.Millisecond), slow, 0); !ok {
		t.Fatal("the slower link's grants are still unusable after lateShift")
	}
}

// The lead is the second longest of the last readiness samples: it follows a
// slow phase up, comes down again once the link recovered, and one pause
// does not set it.
func TestLeadFollowsReadiness(t *testing.T) {
	var tr transitTimes
	tr.seed(10 * time.Millisecond)
	if got := tr.currentLead(); got != 15*time.Millisecond {
		t.Fatalf("seeded lead %v, want 1.5 round trips", got)
	}
	for range leadSamples {
		tr.ready(80 * time.Millisecond)
	}
	if got := tr.currentLead(); got != 80*time.Millisecond {
		t.Fatalf("lead after a slow phase %v", got)
	}
	for range leadSamples {
		tr.ready(3 * time.Millisecond)
	}
	if got := tr.currentLead(); got != 3*time.Millisecond {
		t.Fatalf("lead after recovery %v, want 3ms", got)
	}
	tr.ready(300 * time.Millisecond) // one pause
	for range 7 {
		tr.ready(3 * time.Millisecond)
	}
	if got := tr.currentLead(); got != 3*time.Millisecond {
		t.Fatalf("lead after one pause %v, want 3ms", got)
	}
}

// Leave never lets a request go before its window opens (an inflated lead
// holds it), and says ErrLate once the window has passed.
func TestLeaveHoldsUntilTheWindowAndRefusesAfter(t *testing.T) {
	now := time.Now()
	d := Departure{From: now.Add(30 * time.Millisecond), By: now.Add(40 * time.Millisecond)}
	if err := d.Leave(context.Background()); err != nil {
		t.Fatalf("leave within the window: %v", err)
	}
	if time.Now().Before(d.From) {
		t.Fatal("left before the window opened")
	}
	late := Departure{From: now.Add(-20 * time.Millisecond), By: now.Add(-10 * time.Millisecond)}
	if err := late.Leave(context.Background()); !errors.Is(err, ErrLate) {
		t.Fatalf("leave after the window: %v", err)
	}
	var none Departure
	if none.Leave(context.Background()) != nil || none.Check() != nil {
		t.Fatal("the zero Departure refuses")
	}
}

func TestRepliesCarryPlaceQueueTimeAndBudget(t *testing.T) {
	d := &dispenser{id: "D1"}
	p := &pending{seq: 42}
	if got := string(d.reply(true, p, 1500*time.Microsecond, 11500*time.Microsecond)); got != `{"ok":true,"q":1500,"b":11500,"d":"D1","s":42}` {
		t.Fatalf("grant %s", got)
	}
	if got := string(d.reply(false, p, 0, 0)); got != `{"ok":false,"d":"D1","s":42}` {
		t.Fatalf("ask again %s", got)
	}
}
