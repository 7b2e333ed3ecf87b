package worker_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/xygroup/xygroup/worker"
	wt "github.com/xygroup/xygroup/worker/workertest"
	"github.com/xygroup/xygroup/xylink"
	"github.com/xygroup/xygroup/xylink/sandbox"
)

// allEvents waits until the events stream holds n terminal events, then
// returns every event in it, in order.
func allEvents(t *testing.T, js jetstream.JetStream, n int, within time.Duration) []wt.Event {
	t.Helper()
	wt.AwaitStream(t, js, worker.StreamEvents)
	wt.Eventually(t, within, func() bool { return wt.TerminalCount(t, js) >= n }, fmt.Sprintf("%d terminal events", n))
	return wt.StoredEvents(t, js)
}

// Two enterprises that use the same commandId do not meet each other's record
// or event: each command is sent once and ends with its own created event, and
// a repeat of either is recognised as that tenant's.
func TestTenantsMayShareACommandID(t *testing.T) {
	srv := wt.StartNATS(t)
	sb := wt.StartSandbox(t, sandbox.Config{Rate: 1e6, Enterprises: []sandbox.Enterprise{{ID: "other", Token: "other-token"}}})
	c := wt.Client(t, sb, xylink.Credentials{EnterpriseID: "other", Token: "other-token"})
	wt.StartWorker(t, srv, c)
	js := wt.JetStream(t, wt.Connect(t, srv))
	wt.AwaitStream(t, js, worker.StreamCommands)

	const n = 20
	for i := range n {
		id := fmt.Sprintf("shared-%02d", i)
		// Each tenant's publisher dedupes its own commands: the Nats-Msg-Id
		// names the tenant, as the README advises.
		wt.Publish(t, js, wt.Enterprise+"/"+id, wt.Command(id, "m-a-"+id, "enterpriseId", fmt.Sprintf("%q", wt.Enterprise)))
		wt.Publish(t, js, "other/"+id, wt.Command(id, "m-b-"+id, "enterpriseId", `"other"`))
	}
	events := allEvents(t, js, 2*n, time.Minute)
	seen := map[string]int{}
	for _, e := range events {
		if e.Subject != worker.SubjectCreated {
			t.Errorf("%s of %v: %s %s", e.CommandID(), e.Fields["enterpriseId"], e.Subject, e.Data)
			continue
		}
		seen[fmt.Sprint(e.Fields["enterpriseId"], "/", e.CommandID())]++
	}
	if len(seen) != 2*n {
		t.Errorf("%d distinct (tenant, command) created events, want %d: %v", len(seen), 2*n, seen)
	}
	for k, c := range seen {
		if c != 1 {
			t.Errorf("%s: %d created events", k, c)
		}
	}
	if st := sb.Stats(); st.Requests != 2*n || len(st.DuplicateCreates) != 0 {
		t.Errorf("%d API requests for %d commands; created twice: %v", st.Requests, 2*n, st.DuplicateCreates)
	}
	for _, ent := range []string{wt.Enterprise, "other"} {
		st, err := worker.LookupCommand(context.Background(), js, ent, "shared-00")
		if err != nil || st.Terminal != worker.SubjectCreated {
			t.Errorf("%s's shared-00: %+v %v", ent, st, err)
		}
		var ev struct {
			EnterpriseID string `json:"enterpriseId"`
		}
		if json.Unmarshal(st.Event, &ev) != nil || ev.EnterpriseID != ent {
			t.Errorf("%s's shared-00 records the event of %q", ent, ev.EnterpriseID)
		}
	}

	// Published again (past the commands stream's dedupe), a command of one
	// tenant is that tenant's repeat: no call; its event is published again
	// under its own Nats-Msg-Id, which the events stream keeps once.
	before := sb.Stats().Requests
	wt.Publish(t, js, "other/shared-00/again", wt.Command("shared-00", "m-b-shared-00", "enterpriseId", `"other"`))
	wt.AwaitConsumerIdle(t, js, time.Minute)
	if got := sb.Stats().Requests; got != before {
		t.Errorf("a repeated command was sent again: %d requests, %d before", got, before)
	}
	if got := wt.TerminalCount(t, js); got != 2*n {
		t.Errorf("%d terminal events after the repeat, want %d", got, 2*n)
	}
}

// A record written under the key of earlier versions (c.<commandId>) still
// stops its command from being sent again, for its own tenant only.
func TestRecordOfAnEarlierVersionIsHonoured(t *testing.T) {
	srv := wt.StartNATS(t)
	sb := wt.StartSandbox(t, sandbox.Config{Rate: 1e6, Enterprises: []sandbox.Enterprise{{ID: "other", Token: "other-token"}}})
	c := wt.Client(t, sb, xylink.Credentials{EnterpriseID: "other", Token: "other-token"})
	js := wt.JetStream(t, wt.Connect(t, srv))
	ctx := context.Background()
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: worker.BucketCommands, History: 1})
	if err != nil {
		t.Fatal(err)
	}
	body := fmt.Sprintf(`{"eventId":"e-old","commandId":"old-1","enterpriseId":%q,"meetingRoomNumber":"m-old-1","attempts":1,"occurredAt":"2026-11-01T00:00:00Z","groups":[]}`, wt.Enterprise)
	rec := fmt.Sprintf(`{"attempts":1,"sent":1,"terminal":{"subject":%q,"ceType":"io.xygroup.groups.created","msgId":"xygroup.terminal.old-1","eventId":"e-old","body":%s}}`,
		worker.SubjectCreated, body)
	if _, err := kv.Put(ctx, "c.old-1", []byte(rec)); err != nil {
		t.Fatal(err)
	}
	wt.StartWorker(t, srv, c)
	wt.AwaitStream(t, js, worker.StreamCommands)
	wt.Publish(t, js, "a/old-1", wt.Command("old-1", "m-old-1"))
	wt.Publish(t, js, "b/old-1", wt.Command("old-1", "m-b-old-1", "enterpriseId", `"other"`))
	events := allEvents(t, js, 2, time.Minute)
	byTenant := map[any]wt.Event{}
	for _, e := range events {
		byTenant[e.Fields["enterpriseId"]] = e
	}
	if e := byTenant[wt.Enterprise]; e.Fields["eventId"] != "e-old" {
		t.Errorf("the earlier version's event was not repeated: %s", e.Data)
	}
	if e := byTenant["other"]; e.Subject != worker.SubjectCreated || e.Fields["eventId"] == "e-old" {
		t.Errorf("the other tenant's command took the earlier record: %s %s", e.Subject, e.Data)
	}
	if st := sb.Stats(); st.Requests != 1 {
		t.Errorf("%d API requests, want 1 (the other tenant's)", st.Requests)
	}
}
