package ratelimit_test

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/xygroup/xygroup/worker/ratelimit"
)

// A caller that asks for each grant once the previous request is queued (not
// granted) gets its grants in the order it asked, from a dispenser on another
// replica, while another replica's requests compete.
func TestQueuedRequestsAreGrantedInOrder(t *testing.T) {
	reps := startReplicas(t, 2, ratelimit.Options{Rate: func(string) float64 { return 50 }})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	waitForDispenser(t, reps)
	asker := reps[0].lim
	if asker.Dispenses("ordered") {
		asker = reps[1].lim
	}
	other := reps[0].lim
	if other == asker {
		other = reps[1].lim
	}
	// Competition from the other replica for the same enterprise.
	bg, stopBg := context.WithCancel(ctx)
	defer stopBg()
	var bgWG sync.WaitGroup
	for range 3 {
		bgWG.Go(func() {
			for other.Wait(bg, "ordered", ratelimit.Live) == nil {
			}
		})
	}

	const n = 30
	order := askInTurn(ctx, t, asker, "ordered", n)
	stopBg()
	bgWG.Wait()
	want := make([]int, n)
	for i := range want {
		want[i] = i
	}
	if !slices.Equal(order, want) {
		t.Fatalf("grants in order %v, want %v", order, want)
	}
	if st := asker.Stats(); st.Requests < n {
		t.Fatalf("%d requests for %d grants", st.Requests, n)
	}
}

// askInTurn asks for n grants of the enterprise, each once the previous
// request is queued (as a lane does), and returns the order they came in.
func askInTurn(ctx context.Context, t *testing.T, lim *ratelimit.Cluster, enterprise string, n int) []int {
	t.Helper()
	var mu sync.Mutex
	var order []int
	prev := make(chan struct{})
	close(prev)
	var wg sync.WaitGroup
	for i := range n {
		after, next := prev, make(chan struct{})
		prev = next
		wg.Go(func() {
			<-after
			if err := lim.Wait(ctx, enterprise, ratelimit.Live, ratelimit.Queued(func() { close(next) })); err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			order = append(order, i)
			mu.Unlock()
		})
	}
	wg.Wait()
	return order
}

// waitForDispenser waits until every shard has a dispenser and the shards
// are spread over the replicas (none holds more than its share), as they
// stay while all run.
func waitForDispenser(t *testing.T, reps []*replica) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		held, most := 0, 0
		for _, r := range reps {
			n := len(r.lim.HeldShards())
			held += n
			most = max(most, n)
		}
		if held == ratelimit.DefaultShards && most <= (ratelimit.DefaultShards+len(reps)-1)/len(reps) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("shards not all held and spread: %d held, at most %d on one replica", held, most)
		}
		time.Sleep(10 * time.Millisecond) // polling the election: no event to await
	}
}
