package worker_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/xygroup/xygroup/worker"
	"github.com/xygroup/xygroup/worker/embedded"
	"github.com/xygroup/xygroup/xylink"
	"github.com/xygroup/xygroup/xylink/sandbox"
)

// A worker takes commands from JetStream, calls XYLink and publishes one
// terminal event per command. Here NATS and the API (the sandbox) run in the
// process; in production worker.New gets a connection to your NATS cluster and
// a client for XYLink.
func ExampleNew() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	dir, _ := os.MkdirTemp("", "example")
	defer os.RemoveAll(dir)
	srv, err := embedded.Start(embedded.Config{Listen: "127.0.0.1:0", StoreDir: dir})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer srv.Stop()
	sb, err := sandbox.Start(sandbox.Config{Enterprises: []sandbox.Enterprise{{ID: "e1", Token: "t1"}}}, "127.0.0.1:0")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer sb.Close(context.Background())
	api, _ := xylink.NewClient(sb.URL, xylink.WithTenants(xylink.Credentials{EnterpriseID: "e1", Token: "t1"}))

	wnc, _ := srv.Connect()
	defer wnc.Close()
	// The client is both the caller and the tenant directory.
	w, err := worker.New(wnc, api, api, worker.WithDefaultEnterprise("e1"))
	if err != nil {
		fmt.Println(err)
		return
	}
	runCtx, stop := context.WithCancel(ctx)
	ran := make(chan error, 1)
	go func() { ran <- w.Run(runCtx) }()
	defer func() { stop(); <-ran }()

	nc, _ := srv.Connect(nats.Name("example"))
	defer nc.Close()
	// Listen for the terminal events before publishing, so that none is missed.
	events := make(chan *nats.Msg, 1)
	for _, subject := range []string{worker.SubjectCreated, worker.SubjectFailed + ".>"} {
		if _, err := nc.ChanSubscribe(subject, events); err != nil {
			fmt.Println(err)
			return
		}
	}
	js, _ := jetstream.New(nc)
	cmd := []byte(`{"commandId":"example-1","meetingRoomNumber":"910004217404","mode":"random","groupCount":2}`)
	for {
		// The worker creates its streams when it starts: until then, nothing answers.
		_, err := js.Publish(ctx, worker.SubjectCreate, cmd, jetstream.WithMsgID("example-1"))
		if err == nil {
			break
		}
		if !errors.Is(err, nats.ErrNoResponders) && !errors.Is(err, jetstream.ErrNoStreamResponse) || ctx.Err() != nil {
			fmt.Println(err)
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	select {
	case m := <-events:
		fmt.Println(m.Subject)
	case <-ctx.Done():
		fmt.Println("no event")
	}
	// Output: xylink.groups.created
}
