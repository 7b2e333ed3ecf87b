package commands_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/xygroup/xygroup/worker"
	"github.com/xygroup/xygroup/worker/commands"
	wt "github.com/xygroup/xygroup/worker/workertest"
)

// An invalid command that is not a JSON object has no commandId: its event
// names it by its Nats-Msg-Id, or by its place in the commands stream. A
// replay of it (from the failed events, or from the commands stream; with the
// same ids, or with new ones) ends it again under the id the replay waits for:
// its outcome is counted, nothing is left pending.
func TestReplayOfANonObjectCommandEnds(t *testing.T) {
	for _, tc := range []struct {
		source string
		newIDs bool
	}{{source: "failed"}, {source: "commands"}, {source: "failed", newIDs: true}} {
		t.Run(fmt.Sprintf("%s newIds=%v", tc.source, tc.newIDs), func(t *testing.T) {
			js, _ := startTenants(t)
			wt.Publish(t, js, "not-an-object", []byte(`[1,2,3]`))
			wt.Publish(t, js, "", []byte(`"a string"`))
			wt.Publish(t, js, "json-null", []byte(`null`))
			evs := wt.AwaitTerminal(t, js, 3, time.Minute)
			unnamed := worker.StreamCommands + ":2" // no Nats-Msg-Id: named by its place in the stream
			for _, id := range []string{"not-an-object", unnamed, "json-null"} {
				if e := evs[id]; len(e) != 1 || e[0].Subject != worker.SubjectFailed+".invalid_command" {
					t.Fatalf("%s before the replay: %v (events of %v)", id, e, keysOf(evs))
				}
			}

			ctx := context.Background()
			sel := commands.Selection{Source: tc.source, Classes: []string{"invalid_command"}}
			items, err := commands.Select(ctx, js, sel)
			if err != nil || len(items) != 3 {
				t.Fatalf("selected %d (%v)", len(items), err)
			}
			r := &commands.Replayer{JS: js, DefaultEnterprise: wt.Enterprise, NewIDs: tc.newIDs}
			wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			sum, err := r.Run(ctx, wctx, &commands.Checkpoint{ID: sel.ID(), Selection: sel, NewIDs: tc.newIDs}, items)
			if err != nil {
				t.Fatal(err)
			}
			if sum.Published != 3 || sum.FailedAgain["invalid_command"] != 3 || sum.Pending != 0 {
				t.Fatalf("replay of three non-object commands: %+v", sum)
			}
			want := map[string]bool{"not-an-object": true, unnamed: true, "json-null": true}
			if tc.newIDs { // commands of their own beside the originals
				want = map[string]bool{"not-an-object~" + sel.ID(): true, unnamed + "~" + sel.ID(): true, "json-null~" + sel.ID(): true}
			}
			after := wt.AwaitTerminal(t, js, map[bool]int{false: 3, true: 6}[tc.newIDs], 30*time.Second)
			for id := range want {
				if len(after[id]) == 0 {
					t.Errorf("no event names %s after the replay (events of %v)", id, keysOf(after))
				}
			}
		})
	}
}

func keysOf[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}
