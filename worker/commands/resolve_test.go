package commands_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/xygroup/xygroup/worker/commands"
	wt "github.com/xygroup/xygroup/worker/workertest"
)

// "--since 1h" resolves to whole seconds, the window ending at the run; the
// same selection given again takes the same times within ResolutionReuse, and
// after it only while that replay stopped before its end.
func TestRelativeTimesResolveOnce(t *testing.T) {
	js := wt.JetStream(t, wt.Connect(t, wt.StartNATS(t)))
	ctx := context.Background()
	hour := time.Hour
	rel := commands.Relative{Selection: commands.Selection{Source: "failed", Classes: []string{"rejected"}}, SinceAgo: &hour}
	t0 := time.Date(2026, 11, 26, 11, 0, 0, 400e6, time.UTC)

	first, _, err := rel.Resolve(ctx, js, "", t0)
	if err != nil {
		t.Fatal(err)
	}
	if want := time.Date(2026, 11, 26, 10, 0, 1, 0, time.UTC); !first.Since.Equal(want) || !first.Until.Equal(want.Add(hour)) {
		t.Fatalf("resolved to %v..%v, want %v..%v", first.Since, first.Until, want, want.Add(hour))
	}
	soon := resolve(t, js, rel, t0.Add(commands.ResolutionReuse-time.Second))
	if soon.ID() != first.ID() {
		t.Fatalf("within the reuse time: %+v, first %+v", soon, first)
	}
	// An interrupted replay of it keeps its times for as long as it is unfinished.
	publishCheckpoint(t, js, &commands.Checkpoint{ID: first.ID(), Selection: first, Total: 10, Done: 4})
	if later := resolve(t, js, rel, t0.Add(time.Hour)); later.ID() != first.ID() {
		t.Fatalf("unfinished, an hour later: %+v, first %+v", later, first)
	}
	publishCheckpoint(t, js, &commands.Checkpoint{ID: first.ID(), Selection: first, Total: 10, Done: 10})
	fresh := resolve(t, js, rel, t0.Add(2*time.Hour))
	if fresh.ID() == first.ID() || !fresh.Since.Equal(first.Since.Add(2*time.Hour)) {
		t.Fatalf("finished, two hours later: %+v, first %+v", fresh, first)
	}
}

func resolve(t *testing.T, js jetstream.JetStream, rel commands.Relative, now time.Time) commands.Selection {
	t.Helper()
	s, _, err := rel.Resolve(context.Background(), js, "", now)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// publishCheckpoint writes a replay's progress where Run keeps it.
func publishCheckpoint(t *testing.T, js jetstream.JetStream, cp *commands.Checkpoint) {
	t.Helper()
	kv, err := js.KeyValue(context.Background(), commands.BucketReplays)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(cp)
	if _, err := kv.Put(context.Background(), cp.ID, b); err != nil {
		t.Fatal(err)
	}
}
