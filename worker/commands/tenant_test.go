package commands_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/xygroup/xygroup/worker"
	"github.com/xygroup/xygroup/worker/commands"
	wt "github.com/xygroup/xygroup/worker/workertest"
	"github.com/xygroup/xygroup/xylink"
	"github.com/xygroup/xygroup/xylink/sandbox"
)

// Publish's Nats-Msg-Id names the tenant so that the commands stream's dedupe
// never takes one tenant's command for another's. enterpriseId is any string
// and commandId any string without spaces, so "/" may be in either: no two
// (enterpriseId, commandId) pairs may share a Nats-Msg-Id.
func TestPublishMsgIDsOfTenantsDoNotCollide(t *testing.T) {
	srv := wt.StartNATS(t)
	js := wt.JetStream(t, wt.Connect(t, srv))
	ctx := context.Background()
	if _, err := js.CreateStream(ctx, worker.StreamSettings{}.CommandsStream()); err != nil {
		t.Fatal(err)
	}
	cmds := []string{
		`{"commandId":"c","enterpriseId":"a/b","meetingRoomNumber":"m1","groupCount":2}`,
		`{"commandId":"b/c","enterpriseId":"a","meetingRoomNumber":"m2","groupCount":2}`,
		// The default tenant's command "e/x", and tenant e's command "x".
		`{"commandId":"e/x","meetingRoomNumber":"m3","groupCount":2}`,
		`{"commandId":"x","enterpriseId":"e","meetingRoomNumber":"m4","groupCount":2}`,
	}
	for _, c := range cmds {
		if _, err := commands.Publish(ctx, js, []byte(c), nil); err != nil {
			t.Fatal(err)
		}
	}
	s, err := js.Stream(ctx, worker.StreamCommands)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != uint64(len(cmds)) {
		t.Fatalf("the commands stream holds %d of %d commands of distinct (enterpriseId, commandId): "+
			"the others were dropped as duplicates of another tenant's", info.State.Msgs, len(cmds))
	}
}

// startTenants runs a worker for the default tenant and "other", and returns a
// publisher's JetStream once the streams exist.
func startTenants(t *testing.T) (jetstream.JetStream, *sandbox.Server) {
	t.Helper()
	srv := wt.StartNATS(t)
	sb := wt.StartSandbox(t, sandbox.Config{Rate: 1e6, Enterprises: []sandbox.Enterprise{{ID: "other", Token: "other-token"}}})
	wt.StartWorker(t, srv, wt.Client(t, sb, xylink.Credentials{EnterpriseID: "other", Token: "other-token"}))
	js := wt.JetStream(t, wt.Connect(t, srv))
	wt.AwaitStream(t, js, worker.StreamCommands)
	wt.AwaitStream(t, js, worker.StreamEvents)
	return js, sb
}

// A command without a commandId gets one from Publish; the id Publish returns
// is the one its events carry, so that publish --wait finds them, also when
// the command names its tenant.
func TestPublishedWithoutCommandIDIsAwaited(t *testing.T) {
	js, _ := startTenants(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	waiter, err := commands.NewWaiter(ctx, js, commands.RecordLookup(js, wt.Enterprise))
	if err != nil {
		t.Fatal(err)
	}
	defer waiter.Close()
	ref, err := commands.Publish(ctx, js, []byte(`{"enterpriseId":"other","meetingRoomNumber":"910000000010","groupCount":2}`), nil)
	if err != nil {
		t.Fatal(err)
	}
	id := ref.CommandID
	var got []string
	err = waiter.Await(ctx, []commands.Ref{ref}, func(e commands.Event) { got = append(got, e.Subject) })
	if err != nil {
		ev := wt.AwaitTerminal(t, js, 1, 10*time.Second)
		var carried []string
		for k := range ev {
			carried = append(carried, k)
		}
		t.Fatalf("Publish returned commandId %q; the command's events carry %q: %v", id, carried, err)
	}
}

// Two tenants use one commandId. publish --wait (Publish, Waiter.Await)
// of one tenant's command must not report the other tenant's event as its
// outcome.
func TestWaiterDoesNotTakeAnotherTenantsEvent(t *testing.T) {
	js, sb := startTenants(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// Tenant "other"'s shared-1 has failed (its meeting refuses), a moment ago.
	if _, err := sb.AddMeeting(sandbox.MeetingSpec{Number: "910000000011", Fail: &sandbox.FixedAnswer{Status: 400, ErrorCode: 60001}}); err != nil {
		t.Fatal(err)
	}
	if _, err := commands.Publish(ctx, js, []byte(`{"commandId":"shared-1","enterpriseId":"other","meetingRoomNumber":"910000000011","groupCount":2}`), nil); err != nil {
		t.Fatal(err)
	}
	wt.AwaitTerminal(t, js, 1, 20*time.Second)

	// The default tenant publishes its own shared-1 and waits for it.
	waiter, err := commands.NewWaiter(ctx, js, commands.RecordLookup(js, wt.Enterprise))
	if err != nil {
		t.Fatal(err)
	}
	defer waiter.Close()
	raw := []byte(`{"commandId":"shared-1","enterpriseId":"` + wt.Enterprise + `","meetingRoomNumber":"910000000012","groupCount":2}`)
	ref, err := commands.Publish(ctx, js, raw, nil)
	if err != nil {
		t.Fatal(err)
	}
	var got commands.Event
	if err := waiter.Await(ctx, []commands.Ref{ref}, func(e commands.Event) { got = e }); err != nil {
		t.Fatal(err)
	}
	var ev struct {
		EnterpriseID string `json:"enterpriseId"`
	}
	_ = json.Unmarshal(got.Data, &ev)
	if ev.EnterpriseID != wt.Enterprise {
		t.Fatalf("%s's shared-1 awaited, got tenant %q's event (%s): %s", wt.Enterprise, ev.EnterpriseID, got.Subject, got.Data)
	}
}
