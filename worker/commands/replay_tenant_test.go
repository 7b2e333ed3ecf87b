package commands_test

import (
	"context"
	"testing"
	"time"

	"github.com/xygroup/xygroup/worker"
	"github.com/xygroup/xygroup/worker/commands"
	wt "github.com/xygroup/xygroup/worker/workertest"
	"github.com/xygroup/xygroup/xylink/sandbox"
)

// replayFailed replays the rejected commands and waits for their outcomes.
func replayFailed(t *testing.T, r *commands.Replayer, want int) commands.Summary {
	t.Helper()
	ctx := context.Background()
	sel := commands.Selection{Source: "failed", Classes: []string{"rejected"}}
	items, err := commands.Select(ctx, r.JS, sel)
	if err != nil {
		t.Fatal(err)
	}
	if len(items) != want {
		t.Fatalf("selected %d commands, want %d: %+v", len(items), want, items)
	}
	wctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	sum, err := r.Run(ctx, wctx, &commands.Checkpoint{ID: sel.ID(), Selection: sel}, items)
	if err != nil {
		t.Fatal(err)
	}
	return sum
}

// Two tenants' failed commands share a commandId: a replay tries both again,
// and counts both outcomes.
func TestReplayOfTwoTenantsWithOneCommandID(t *testing.T) {
	js, sb := startTenants(t)
	sb.SetFaults(sandbox.Faults{Fail: &sandbox.FixedAnswer{Status: 400, ErrorCode: 60001}})
	ctx := context.Background()
	for _, c := range []string{
		`{"commandId":"shared-r","enterpriseId":"other","meetingRoomNumber":"910000000021","groupCount":2}`,
		`{"commandId":"shared-r","enterpriseId":"` + wt.Enterprise + `","meetingRoomNumber":"910000000022","groupCount":2}`,
	} {
		if _, err := commands.Publish(ctx, js, []byte(c), nil); err != nil {
			t.Fatal(err)
		}
	}
	wt.AwaitConsumerIdle(t, js, 20*time.Second)
	if n := wt.TerminalCount(t, js); n != 2 {
		t.Fatalf("%d terminal events, want 2", n)
	}
	sb.SetFaults(sandbox.Faults{})
	sum := replayFailed(t, &commands.Replayer{JS: js, DefaultEnterprise: wt.Enterprise}, 2)
	if st := sb.Stats(); st.ByAnswer["200"] != 2 || sum.Created != 2 {
		t.Fatalf("replay of 2 commands: %+v; the API created %d (answers %v): one tenant's replay was dropped as the other's duplicate",
			sum, st.ByAnswer["200"], st.ByAnswer)
	}
}

// A command published without a commandId is known by its Nats-Msg-Id. A
// replay keeps that identity: its outcome is the command's, and the replay
// counts it; once created by a replay, another replay does not send it again.
func TestReplayKeepsTheIdentityOfACommandWithoutCommandID(t *testing.T) {
	js, sb := startTenants(t)
	sb.SetFaults(sandbox.Faults{Fail: &sandbox.FixedAnswer{Status: 400, ErrorCode: 60001}})
	wt.Publish(t, js, "plain-1", []byte(`{"meetingRoomNumber":"910000000023","groupCount":2}`))
	wt.AwaitConsumerIdle(t, js, 20*time.Second)
	sb.SetFaults(sandbox.Faults{})
	sum := replayFailed(t, &commands.Replayer{JS: js, DefaultEnterprise: wt.Enterprise}, 1)
	if sum.Created != 1 || sum.Pending != 0 {
		var data []byte
		if s, err := js.Stream(context.Background(), worker.StreamEvents); err == nil {
			if m, err := s.GetLastMsgForSubject(context.Background(), worker.SubjectCreated); err == nil {
				data = m.Data
			}
		}
		t.Errorf("replay of plain-1: %+v; the replay's created event: %s", sum, data)
	}
	// Another replay (another selection) of the same failed event.
	before := sb.Stats().Requests
	ctx := context.Background()
	sel := commands.Selection{Source: "failed", Classes: []string{"rejected"}, Meeting: "910000000023"}
	items, err := commands.Select(ctx, js, sel)
	if err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := (&commands.Replayer{JS: js, DefaultEnterprise: wt.Enterprise}).Run(ctx, wctx, &commands.Checkpoint{ID: sel.ID(), Selection: sel}, items); err != nil {
		t.Fatal(err)
	}
	wt.AwaitConsumerIdle(t, js, 10*time.Second)
	if got := sb.Stats().Requests; got != before {
		t.Fatalf("plain-1, created by the first replay, was sent again by the second: %d requests, %d before", got, before)
	}
}
