package deployments

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/xygroup/xygroup/worker"
	"github.com/xygroup/xygroup/worker/commands"
	"github.com/xygroup/xygroup/xylink"
	"github.com/xygroup/xygroup/xylink/sandbox"
)

var passwords = map[string]string{"worker": "w-pass", "operator": "o-pass", "publisher": "p-pass", "events": "e-pass", "sys": "s-pass"}

// startFromConfig parses deployments/nats/nats-server.conf as nats-server does and
// starts a node from it, on free ports and a temporary store, without routes.
func startFromConfig(t *testing.T) *server.Server {
	t.Helper()
	t.Setenv("SERVER_NAME", "nats-0")
	for user, pw := range passwords {
		t.Setenv(strings.ToUpper(user)+"_PASSWORD", pw)
	}
	opts, err := server.ProcessConfigFile("nats/nats-server.conf")
	if err != nil {
		t.Fatalf("nats-server.conf: %v", err)
	}
	if opts.ServerName != "nats-0" || opts.Cluster.Name != "xygroup" || len(opts.Routes) != 3 || !opts.JetStream {
		t.Fatalf("config: name %q cluster %q routes %d jetstream %v", opts.ServerName, opts.Cluster.Name, len(opts.Routes), opts.JetStream)
	}
	opts.Host, opts.Port, opts.HTTPPort = "127.0.0.1", -1, 0
	opts.Cluster.Port, opts.Routes, opts.Cluster.Name = 0, nil, ""
	opts.StoreDir = t.TempDir()
	opts.NoSigs = true
	s, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	go s.Start()
	if !s.ReadyForConnections(30 * time.Second) {
		t.Fatal("server from the config did not start")
	}
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	return s
}

// connectAs connects with a user of accounts.conf and records permission errors.
func connectAs(t *testing.T, s *server.Server, user string) (*nats.Conn, func() []error) {
	t.Helper()
	var mu sync.Mutex
	var errs []error
	nc, err := nats.Connect(s.ClientURL(), nats.UserInfo(user, passwords[user]),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			mu.Lock()
			errs = append(errs, err)
			mu.Unlock()
		}))
	if err != nil {
		t.Fatalf("connect as %s: %v", user, err)
	}
	t.Cleanup(nc.Close)
	return nc, func() []error {
		_ = nc.Flush()
		mu.Lock()
		defer mu.Unlock()
		return append([]error(nil), errs...)
	}
}

// The worker, a publisher and an events reader, each with its own user: the whole
// flow works with least privilege, and each user is refused what it must not do.
func TestNATSConfigWithLeastPrivilege(t *testing.T) {
	s := startFromConfig(t)
	sb, err := sandbox.Start(sandbox.Config{Enterprises: []sandbox.Enterprise{{ID: "e1", Token: "t1"}}}, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer sb.Close(context.Background())
	api, _ := xylink.NewClient(sb.URL, xylink.WithTenants(xylink.Credentials{EnterpriseID: "e1", Token: "t1"}))
	wnc, workerErrs := connectAs(t, s, "worker")
	w, err := worker.New(wnc, api, api, worker.WithDefaultEnterprise("e1"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	defer func() { cancel(); <-done }()

	pnc, publisherErrs := connectAs(t, s, "publisher")
	pjs, _ := jetstream.New(pnc)
	var waiter *commands.Waiter
	deadline := time.Now().Add(30 * time.Second)
	for waiter == nil {
		if waiter, err = commands.NewWaiter(ctx, pjs, time.Minute); err != nil && time.Now().After(deadline) {
			t.Fatalf("publisher cannot follow events: %v (worker errors %v)", err, workerErrs())
		}
		time.Sleep(50 * time.Millisecond)
	}
	wctx, wcancel := context.WithTimeout(ctx, 30*time.Second)
	defer wcancel()
	id, err := commands.Publish(wctx, pjs, []byte(`{"commandId":"perm-1","meetingRoomNumber":"910004217404","groupCount":2}`), nil)
	if err != nil {
		t.Fatalf("publisher cannot publish a command: %v", err)
	}
	var got commands.Event
	if err := waiter.Await(wctx, []string{id}, func(e commands.Event) { got = e }); err != nil {
		t.Fatalf("no event: %v (worker errors %v)", err, workerErrs())
	}
	if got.Subject != worker.SubjectCreated {
		t.Fatalf("event on %s: %s", got.Subject, got.Data)
	}
	if errs := workerErrs(); len(errs) > 0 {
		t.Fatalf("the worker was refused something it needs: %v", errs)
	}

	// The events user reads the events stream.
	enc, eventsErrs := connectAs(t, s, "events")
	ejs, _ := jetstream.New(enc)
	cons, err := ejs.OrderedConsumer(ctx, worker.StreamEvents, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatalf("events user cannot read events: %v", err)
	}
	if m, err := cons.Next(jetstream.FetchMaxWait(5 * time.Second)); err != nil || !strings.Contains(string(m.Data()), "perm-1") {
		t.Fatalf("events user read %v", err)
	}

	// What each must not do.
	refused := func(name string, errsOf func() []error, do func() error) {
		t.Helper()
		err := do()
		deadline := time.Now().Add(5 * time.Second)
		for err == nil && len(errsOf()) == 0 && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		if err == nil && len(errsOf()) == 0 {
			t.Errorf("%s: allowed", name)
		}
	}
	refused("publisher publishes an event", publisherErrs, func() error { return pnc.Publish(worker.SubjectCreated, []byte("{}")) })
	refused("events user publishes a command", eventsErrs, func() error {
		_, err := ejs.Publish(ctx, worker.SubjectCreate, []byte("{}"))
		if errors.Is(err, nats.ErrNoResponders) || err != nil {
			return errors.New("refused")
		}
		return nil
	})
	refused("events user deletes the events stream", eventsErrs, func() error { return ejs.DeleteStream(ctx, worker.StreamEvents) })
	refused("worker publishes a command", workerErrs, func() error { return wnc.Publish(worker.SubjectCreate, []byte("{}")) })
}
