package worker_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/xygroup/xygroup/worker"
	wt "github.com/xygroup/xygroup/worker/workertest"
	"github.com/xygroup/xygroup/xylink"
	"github.com/xygroup/xygroup/xylink/sandbox"
)

// A record of an earlier version (c.<commandId>) without a terminal event
// names no tenant. Carried over to a tenant's command with that commandId, it
// must not put the API answer it holds, which may be another tenant's, into
// this tenant's event.
func TestEarlierRecordDoesNotLendItsAnswerToAnotherTenant(t *testing.T) {
	srv := wt.StartNATS(t)
	sb := wt.StartSandbox(t, sandbox.Config{Rate: 1e6, Enterprises: []sandbox.Enterprise{{ID: "other", Token: "other-token"}}})
	c := wt.Client(t, sb, xylink.Credentials{EnterpriseID: "other", Token: "other-token"})
	js := wt.JetStream(t, wt.Connect(t, srv))
	ctx := context.Background()
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: worker.BucketCommands, History: 1})
	if err != nil {
		t.Fatal(err)
	}
	// test-enterprise's old-2 was retrying when the workers were upgraded.
	rec := `{"attempts":1,"sent":1,"last":{"httpStatus":503,"userMessage":"busy","developerMessage":"test-enterprise meeting 910000000061: member 18961782725 ..."}}`
	if _, err := kv.Put(ctx, "c.old-2", []byte(rec)); err != nil {
		t.Fatal(err)
	}
	// Tenant "other"'s breaker is open cluster-wide for longer than the test:
	// its command is refused every call and ends at its deadline.
	breakers, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: worker.BucketBreakers, History: 1})
	if err != nil {
		t.Fatal(err)
	}
	open := fmt.Sprintf(`{"enterpriseId":"other","state":"open","failures":5,"opens":1,"reason":"api","openUntil":%q}`,
		time.Now().Add(time.Hour).UTC().Format(time.RFC3339Nano))
	if _, err := breakers.Put(ctx, worker.BreakerKey("other"), []byte(open)); err != nil {
		t.Fatal(err)
	}
	wt.StartWorker(t, srv, c)
	wt.AwaitStream(t, js, worker.StreamCommands)
	// Tenant "other"'s old-2, past its deadline while its breaker is open.
	deadline := time.Now().Add(300 * time.Millisecond).UTC().Format(time.RFC3339Nano)
	wt.Publish(t, js, "other/old-2", wt.Command("old-2", "910000000062", "enterpriseId", `"other"`, "deadline", `"`+deadline+`"`))
	evs := allEvents(t, js, 1, 30*time.Second)
	for _, e := range evs {
		if strings.Contains(string(e.Data), "910000000061") {
			t.Fatalf("tenant other's event carries the earlier record's answer: %s %s", e.Subject, e.Data)
		}
	}
}
