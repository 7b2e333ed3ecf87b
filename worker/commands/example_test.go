package commands_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/xygroup/xygroup/worker"
	"github.com/xygroup/xygroup/worker/commands"
	"github.com/xygroup/xygroup/worker/embedded"
	"github.com/xygroup/xygroup/xylink"
	"github.com/xygroup/xygroup/xylink/sandbox"
)

// A scheduling system publishes a command and awaits its terminal event. Here a
// worker, NATS and the XYLink sandbox run in the same process; in production only
// the NATS connection is yours.
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	// What runs elsewhere in production: NATS, the API (the sandbox) and a worker.
	dir, _ := os.MkdirTemp("", "example")
	defer os.RemoveAll(dir)
	srv, _ := embedded.Start(embedded.Config{StoreDir: dir})
	defer srv.Stop()
	sb, _ := sandbox.Start(sandbox.Config{Enterprises: []sandbox.Enterprise{{ID: "e1", Token: "t1"}}}, "127.0.0.1:0")
	defer sb.Close(context.Background())
	api, _ := xylink.NewClient(sb.URL, xylink.WithTenants(xylink.Credentials{EnterpriseID: "e1", Token: "t1"}))
	wnc, _ := srv.Connect()
	w, _ := worker.New(wnc, api, api, worker.WithDefaultEnterprise("e1"))
	go func() { _ = w.Run(ctx) }()

	// The scheduling system's side.
	nc, _ := srv.Connect(nats.Name("scheduler"))
	defer nc.Close()
	js, _ := jetstream.New(nc)
	// Follow the events before publishing, so that none is missed.
	waiter, err := commands.NewWaiter(ctx, js, commands.RecordLookup(js, ""))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer waiter.Close()
	cmd := []byte(`{"commandId":"sched-example-1","meetingRoomNumber":"910004217404","mode":"random","groupCount":2}`)
	ref, err := commands.Publish(ctx, js, cmd, nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	_ = waiter.Await(ctx, []commands.Ref{ref}, func(e commands.Event) {
		var created worker.CreatedEvent
		_ = json.Unmarshal(e.Data, &created)
		fmt.Printf("%s on %s: %d groups\n", e.CommandID, e.Subject, len(created.Groups))
	})
	// Output: sched-example-1 on xylink.groups.created: 2 groups
}
