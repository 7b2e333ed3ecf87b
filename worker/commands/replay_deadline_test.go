package commands_test

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/xygroup/xygroup/worker"
	"github.com/xygroup/xygroup/worker/commands"
	wt "github.com/xygroup/xygroup/worker/workertest"
	"github.com/xygroup/xygroup/xylink/sandbox"
)

// A command whose deadline passed before its meeting started ends
// failed.meeting_not_started. Once the meeting has started, a replay of it is
// tried again, under a fresh deadline (the replay's, or the workers' maximum
// wait from the replay), not ended at once by the deadline that ended it: the
// replay reports it created, nothing pending.
func TestReplayGivesAFreshDeadline(t *testing.T) {
	for _, tc := range []struct {
		name     string
		deadline time.Duration // the replay's; 0: none, the workers' maximum wait
	}{
		{name: "the replay's deadline", deadline: time.Minute},
		{name: "the workers' maximum wait"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			js, sb := startTenants(t)
			meeting := "91000000009" + strconv.Itoa(int(tc.deadline/time.Minute))
			if _, err := sb.AddMeeting(sandbox.MeetingSpec{Number: meeting, StartsIn: sandbox.Duration(10 * time.Minute)}); err != nil {
				t.Fatal(err)
			}
			deadline := time.Now().Add(3 * time.Second).UTC().Format(time.RFC3339Nano)
			wt.Publish(t, js, "late-1", wt.Command("late-1", meeting, "deadline", strconv.Quote(deadline)))
			evs := wt.AwaitTerminal(t, js, 1, time.Minute)["late-1"]
			if last := evs[len(evs)-1]; last.Subject != worker.SubjectFailed+".meeting_not_started" {
				t.Fatalf("before the replay: %s %s", last.Subject, last.Data)
			}

			sb.StartMeeting(meeting)
			ctx := context.Background()
			sel := commands.Selection{Source: "failed", Classes: []string{"meeting_not_started"}}
			items, err := commands.Select(ctx, js, sel)
			if err != nil || len(items) != 1 {
				t.Fatalf("selected %d (%v)", len(items), err)
			}
			r := &commands.Replayer{JS: js, DefaultEnterprise: wt.Enterprise}
			if tc.deadline > 0 {
				r.Deadline = time.Now().Add(tc.deadline)
			}
			wctx, cancel := context.WithTimeout(ctx, time.Minute)
			defer cancel()
			sum, err := r.Run(ctx, wctx, &commands.Checkpoint{ID: sel.ID(), Selection: sel}, items)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("replay: %+v; API answers %v", sum, sb.Stats().ByAnswer)
			if sum.Created != 1 || sum.Pending != 0 || len(sum.FailedAgain) != 0 {
				t.Fatalf("replay of a command whose meeting has started: %+v", sum)
			}
		})
	}
}
