package commands_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/xygroup/xygroup/worker"
	"github.com/xygroup/xygroup/worker/commands"
	"github.com/xygroup/xygroup/worker/record"
	wt "github.com/xygroup/xygroup/worker/workertest"
	"github.com/xygroup/xygroup/xylink/sandbox"
)

// Ctrl-C while a replay publishes (the README: "Ctrl-C saves its progress;
// that command resumes it"), before its first periodic checkpoint: the
// interrupted run must leave its checkpoint, so that the resumed run follows
// the outcomes from the first run's start. Without it, the resumed run starts
// a new checkpoint, follows events only from its own start, and a command
// the first run published, and that ended meanwhile, is never seen: it stays
// pending, and the replay exits 1.
func TestReplayInterruptedBeforeItsFirstCheckpointResumes(t *testing.T) {
	js, sb := startTenants(t)
	sb.SetFaults(sandbox.Faults{Fail: &sandbox.FixedAnswer{Status: 400, ErrorCode: 60001}})
	ids := []string{"intr-1", "intr-2"}
	for i, id := range ids {
		wt.Publish(t, js, id, wt.Command(id, fmt.Sprintf("91000000007%d", i)))
	}
	wt.AwaitTerminal(t, js, len(ids), time.Minute)
	sb.SetFaults(sandbox.Faults{})

	ctx := context.Background()
	sel := commands.Selection{Source: "failed", Classes: []string{"rejected"}}
	items, err := commands.Select(ctx, js, sel)
	if err != nil || len(items) != len(ids) {
		t.Fatalf("selected %d (%v)", len(items), err)
	}

	// The first run is interrupted once it has published the first command.
	ictx, interrupt := context.WithCancel(ctx)
	defer interrupt()
	r1 := &commands.Replayer{JS: js, DefaultEnterprise: wt.Enterprise, Progress: func(handled, _, _ int) {
		if handled >= 1 {
			interrupt()
		}
	}}
	sum1, err := r1.Run(ictx, ictx, &commands.Checkpoint{ID: sel.ID(), Selection: sel}, items)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("interrupted run: %+v, %v", sum1, err)
	}
	saved, err := commands.LoadCheckpoint(ctx, js, sel.ID())
	if err != nil {
		t.Fatal(err)
	}
	if saved == nil {
		t.Errorf("the interrupted replay saved no checkpoint (published %d)", sum1.Published)
	}

	// Its first command ends meanwhile.
	wt.Eventually(t, 30*time.Second, func() bool {
		st, err := record.Lookup(ctx, js, wt.Enterprise, items[0].CommandID)
		return err == nil && st.ReplayID == sel.ID() && st.Terminal != ""
	}, "the first replayed command's outcome")
	// A point in the scenario, not a wait for a condition: the run below
	// starts more than a second after that outcome, past the second a fresh
	// replay's follower reads back from its own start.
	time.Sleep(1500 * time.Millisecond)

	// The same command again, as the CLI runs it: it resumes from the checkpoint.
	cp := saved
	if cp == nil {
		cp = &commands.Checkpoint{ID: sel.ID(), Selection: sel}
	}
	r2 := &commands.Replayer{JS: js, DefaultEnterprise: wt.Enterprise}
	wctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	sum, err := r2.Run(ctx, wctx, cp, items)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("resumed: %+v", sum)
	if sum.Created != len(ids) || sum.Pending != 0 {
		t.Fatalf("resumed replay: created %d, pending %d %v; want %d created, none pending (%s)",
			sum.Created, sum.Pending, sum.PendingIDs, len(ids), worker.SubjectCreated)
	}
}
