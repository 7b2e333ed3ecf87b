package deployments

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/xygroup/xygroup/worker"
	"github.com/xygroup/xygroup/worker/clusterstatus"
	"github.com/xygroup/xygroup/worker/commands"
	"github.com/xygroup/xygroup/worker/jsconfig"
	"github.com/xygroup/xygroup/worker/ratelimit"
	"github.com/xygroup/xygroup/xylink"
	"github.com/xygroup/xygroup/xylink/sandbox"
)

var passwords = map[string]string{"worker": "w-pass", "operator": "o-pass", "publisher": "p-pass", "events": "e-pass", "route": "r-pass"}

// tlsConfig is nats-server.conf (with accounts.conf beside it) reading its
// certificates from a directory made by deployments/compose/gen-certs.sh, as the
// compose file's nats-certs service makes them for the nodes.
var tlsOnce struct {
	sync.Once
	conf, certs string
	err         error
}

func tlsConfig(t *testing.T) (conf, certs string) {
	t.Helper()
	tlsOnce.Do(func() {
		dir, err := os.MkdirTemp("", "nats-tls")
		if err != nil {
			tlsOnce.err = err
			return
		}
		tlsOnce.certs = filepath.Join(dir, "certs")
		if err := os.Mkdir(tlsOnce.certs, 0o700); err != nil {
			tlsOnce.err = err
			return
		}
		if out, err := exec.Command("sh", "compose/gen-certs.sh", tlsOnce.certs).CombinedOutput(); err != nil {
			tlsOnce.err = fmt.Errorf("gen-certs.sh (needs openssl): %v\n%s", err, out)
			return
		}
		raw, err := os.ReadFile("nats/nats-server.conf")
		if err != nil {
			tlsOnce.err = err
			return
		}
		acc, err := os.ReadFile("nats/accounts.conf")
		if err != nil {
			tlsOnce.err = err
			return
		}
		tlsOnce.conf = filepath.Join(dir, "nats-server.conf")
		conf := strings.ReplaceAll(string(raw), "/etc/nats-tls/", tlsOnce.certs+"/")
		if err := os.WriteFile(tlsOnce.conf, []byte(conf), 0o600); err != nil {
			tlsOnce.err = err
			return
		}
		tlsOnce.err = os.WriteFile(filepath.Join(dir, "accounts.conf"), acc, 0o600)
	})
	if tlsOnce.err != nil {
		t.Fatal(tlsOnce.err)
	}
	return tlsOnce.conf, tlsOnce.certs
}

// inboxPrefix is each user's own reply prefix, as NATS_INBOX_PREFIX sets it.
func inboxPrefix(user string) string { return "_INBOX_" + user }

// serverOptions parses deployments/nats/nats-server.conf as nats-server does, with
// the node's name and the passwords in the environment.
func serverOptions(t *testing.T, name string) *server.Options {
	t.Helper()
	t.Setenv("SERVER_NAME", name)
	for user, pw := range passwords {
		t.Setenv(strings.ToUpper(user)+"_PASSWORD", pw)
	}
	for i := range 3 {
		t.Setenv(fmt.Sprintf("ROUTE_%d", i), fmt.Sprintf("nats-route://route:%s@nats-%d:6222", passwords["route"], i))
	}
	conf, _ := tlsConfig(t)
	opts, err := server.ProcessConfigFile(conf)
	if err != nil {
		t.Fatalf("nats-server.conf: %v", err)
	}
	if opts.ServerName != name || opts.Cluster.Name != "xygroup" || len(opts.Routes) != 3 || !opts.JetStream {
		t.Fatalf("config: name %q cluster %q routes %d jetstream %v", opts.ServerName, opts.Cluster.Name, len(opts.Routes), opts.JetStream)
	}
	opts.Host, opts.Port, opts.HTTPPort = "127.0.0.1", -1, 0
	opts.StoreDir = t.TempDir()
	opts.NoSigs, opts.NoLog = true, true
	return opts
}

func start(t *testing.T, opts *server.Options) *server.Server {
	t.Helper()
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

// startFromConfig starts a node from the shipped config on free ports and a
// temporary store, without routes.
func startFromConfig(t *testing.T) *server.Server {
	opts := serverOptions(t, "nats-0")
	opts.Cluster.Port, opts.Routes, opts.Cluster.Name = 0, nil, ""
	return start(t, opts)
}

// client is one user's connection; perm receives what the server refused it.
type client struct {
	nc   *nats.Conn
	js   jetstream.JetStream
	perm chan error
}

// connectAs connects with a user of accounts.conf and its own inbox prefix.
func connectAs(t *testing.T, s *server.Server, user string) *client {
	t.Helper()
	c := &client{perm: make(chan error, 100)}
	_, certs := tlsConfig(t)
	nc, err := nats.Connect(tlsURL(s), nats.UserInfo(user, passwords[user]), nats.CustomInboxPrefix(inboxPrefix(user)), nats.RootCAs(filepath.Join(certs, "ca.pem")),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			select {
			case c.perm <- err:
			default:
			}
		}))
	if err != nil {
		t.Fatalf("connect as %s: %v", user, err)
	}
	t.Cleanup(nc.Close)
	c.nc = nc
	c.js, _ = jetstream.New(nc)
	return c
}

// tlsURL is the server's client URL as a client gives it: tls://, on a name
// of the server's certificate.
func tlsURL(s *server.Server) string {
	return fmt.Sprintf("tls://localhost:%d", s.Addr().(*net.TCPAddr).Port)
}

// try runs op and says whether the server let it through: an error from op or a
// permission violation reported for the connection is a refusal.
func (c *client) try(op func(context.Context, *client) error) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- op(ctx, c) }()
	select {
	case err := <-done:
		if err != nil {
			return err
		}
		_ = c.nc.Flush() // a refused publish or subscription is reported before the PONG
		select {
		case err := <-c.perm:
			return err
		case <-time.After(100 * time.Millisecond):
			return nil
		}
	case err := <-c.perm:
		return err
	}
}

// refusals drains what the server refused the connection so far.
func (c *client) refusals() (errs []error) {
	for {
		select {
		case err := <-c.perm:
			errs = append(errs, err)
		default:
			return errs
		}
	}
}

func publish(subject string) func(context.Context, *client) error {
	return func(_ context.Context, c *client) error { return c.nc.Publish(subject, []byte("{}")) }
}

func subscribe(subject string) func(context.Context, *client) error {
	return func(_ context.Context, c *client) error { _, err := c.nc.SubscribeSync(subject); return err }
}

// apiRequest sends a raw JetStream API request and fails on an error answer.
func apiRequest(subject, body string) func(context.Context, *client) error {
	return func(ctx context.Context, c *client) error {
		m, err := c.nc.RequestWithContext(ctx, subject, []byte(body))
		if err != nil {
			return err
		}
		var resp struct {
			Error *struct{ Description string } `json:"error"`
		}
		if err := json.Unmarshal(m.Data, &resp); err != nil {
			return err
		}
		if resp.Error != nil {
			return errors.New(resp.Error.Description)
		}
		return nil
	}
}

// pushConsumer tries to create a push consumer on stream that delivers to
// deliver: the way a user able to create consumers publishes anywhere.
// Each has a name of its own, so that one row's consumer does not make another's
// fail as a name already in use.
func pushConsumer(stream, deliver string) func(context.Context, *client) error {
	name := fmt.Sprintf("escape-%d", escapes.Add(1))
	cfg := fmt.Sprintf(`{"stream_name":%q,"config":{"name":%q,"deliver_subject":%q,"ack_policy":"none"}}`, stream, name, deliver)
	return apiRequest("$JS.API.CONSUMER.CREATE."+stream+"."+name, cfg)
}

var escapes atomic.Int32

// pullRequest asks a consumer for a message: any answer (a message, or a status
// saying there is none) means the request went through.
func pullRequest(stream, consumer string) func(context.Context, *client) error {
	return func(ctx context.Context, c *client) error {
		_, err := c.nc.RequestWithContext(ctx, "$JS.API.CONSUMER.MSG.NEXT."+stream+"."+consumer, []byte(`{"batch":1,"no_wait":true}`))
		return err
	}
}

// pullAndAck fetches a message from a durable of the events stream and
// acknowledges it, waiting for the server to confirm.
func pullAndAck(consumer string) func(context.Context, *client) error {
	return func(ctx context.Context, c *client) error {
		cons, err := c.js.Consumer(ctx, worker.StreamEvents, consumer)
		if err != nil {
			return err
		}
		m, err := cons.Next(jetstream.FetchMaxWait(3 * time.Second))
		if err != nil {
			return err
		}
		return m.DoubleAck(ctx)
	}
}

// The permission table: for every user of accounts.conf, each action it needs
// (allowed) and each it must not have (refused), against a server started from
// the shipped config, with a worker running the whole flow as the worker user.
func TestNATSPermissions(t *testing.T) {
	s := startFromConfig(t)
	sb, err := sandbox.Start(sandbox.Config{Enterprises: []sandbox.Enterprise{{ID: "e1", Token: "t1"}}}, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer sb.Close(context.Background())
	api, _ := xylink.NewClient(sb.URL, xylink.WithTenants(xylink.Credentials{EnterpriseID: "e1", Token: "t1"}))
	wc := connectAs(t, s, "worker")
	w, err := worker.New(wc.nc, api, api, worker.WithDefaultEnterprise("e1"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	defer func() { cancel(); <-done }()
	workerErrs := func() (errs []error) {
		for {
			select {
			case err := <-wc.perm:
				errs = append(errs, err)
			default:
				return errs
			}
		}
	}

	// The whole flow: a publisher follows the events and publishes (publish --wait),
	// the worker answers with an event.
	pc := connectAs(t, s, "publisher")
	waiter, err := commands.NewWaiter(ctx, pc.js, commands.RecordLookup(pc.js, "e1"))
	if err != nil {
		t.Fatalf("publisher cannot follow events: %v", err)
	}
	defer waiter.Close()
	wctx, wcancel := context.WithTimeout(ctx, 30*time.Second)
	defer wcancel()
	perm1 := []byte(`{"commandId":"perm-1","meetingRoomNumber":"910004217404","groupCount":2}`)
	ref, err := commands.Publish(wctx, pc.js, perm1, nil)
	if err != nil {
		t.Fatalf("publisher cannot publish a command: %v", err)
	}
	var got commands.Event
	if err := waiter.Await(wctx, []commands.Ref{ref}, func(e commands.Event) { got = e }); err != nil {
		t.Fatalf("no event: %v (worker refused %v)", err, workerErrs())
	}
	if got.Subject != worker.SubjectCreated {
		t.Fatalf("event on %s: %s", got.Subject, got.Data)
	}
	// Published again: the commands stream drops it, and the publisher reads its
	// event from the workers' records.
	again, err := commands.NewWaiter(ctx, pc.js, commands.RecordLookup(pc.js, "e1"))
	if err != nil {
		t.Fatalf("publisher cannot follow events: %v", err)
	}
	defer again.Close()
	if ref, err = commands.Publish(wctx, pc.js, perm1, nil); err != nil {
		t.Fatalf("publisher cannot publish a command: %v", err)
	}
	var repeated commands.Event
	if err := again.Await(wctx, []commands.Ref{ref}, func(e commands.Event) { repeated = e }); err != nil {
		t.Fatalf("no event for a command published again: %v (publisher refused %v)", err, pc.refusals())
	}
	if string(repeated.Data) != string(got.Data) {
		t.Fatalf("published again: %s, first %s", repeated.Data, got.Data)
	}
	// A meeting that has not started (the parked stream, the meetings bucket, a
	// release consumer) and one that refuses (a failed event, for replay).
	if _, err := sb.AddMeeting(sandbox.MeetingSpec{Number: "910000000002", StartsIn: sandbox.Duration(2 * time.Second)}); err != nil {
		t.Fatal(err)
	}
	if _, err := sb.AddMeeting(sandbox.MeetingSpec{Number: "910000000003", Fail: &sandbox.FixedAnswer{Status: 400, ErrorCode: 60001}}); err != nil {
		t.Fatal(err)
	}
	var refs []commands.Ref
	for i, meeting := range []string{"910000000002", "910000000003"} {
		ref, err := commands.Publish(wctx, pc.js, []byte(fmt.Sprintf(`{"commandId":"perm-%d","meetingRoomNumber":%q,"groupCount":2}`, i+2, meeting)), nil)
		if err != nil {
			t.Fatalf("publisher cannot publish a command: %v", err)
		}
		refs = append(refs, ref)
	}
	outcomes := map[string]string{}
	if err := waiter.Await(wctx, refs, func(e commands.Event) { outcomes[e.CommandID] = e.Subject }); err != nil {
		t.Fatalf("no event: %v %v (worker refused %v)", err, outcomes, workerErrs())
	}
	if outcomes["perm-2"] != worker.SubjectCreated || !strings.HasPrefix(outcomes["perm-3"], "xylink.groups.failed.") {
		t.Fatalf("outcomes %v", outcomes)
	}
	if errs := workerErrs(); len(errs) > 0 {
		t.Fatalf("the worker was refused something it needs: %v", errs)
	}

	// The operator makes the readers' durable pull consumers.
	oc := connectAs(t, s, "operator")
	for _, name := range []string{"events-downstream", "events-other"} {
		if _, err := oc.js.CreateOrUpdateConsumer(ctx, worker.StreamEvents, jetstream.ConsumerConfig{Durable: name, AckPolicy: jetstream.AckExplicitPolicy}); err != nil {
			t.Fatalf("operator cannot create the durable %s: %v", name, err)
		}
	}

	const (
		allowed = true
		refused = false
	)
	ev, cmds, parked := worker.StreamEvents, worker.StreamCommands, worker.StreamParked
	kvCommands := "KV_" + worker.BucketCommands
	table := []struct {
		user, action string
		want         bool
		op           func(context.Context, *client) error
	}{
		// events: its own durable, nothing else (first: nobody else has pulled it yet)
		{"events", "pull and ack its durable", allowed, pullAndAck("events-downstream")},

		// worker
		{"worker", "subscribe to its own inbox", allowed, subscribe("_INBOX_worker.x")},
		{"worker", "publish an event", allowed, publish(worker.SubjectCreated)},
		{"worker", "publish a command", refused, publish(worker.SubjectCreate)},
		{"worker", "publish a cancel answer", allowed, publish("xylink.groups.cancel_rejected")},
		// below sequence 1: nothing (the worker trims done commands below the ack floor)
		{"worker", "trim the commands stream's history", allowed, apiRequest("$JS.API.STREAM.PURGE."+cmds, `{"seq":1}`)},
		{"worker", "publish a cancel", refused, publish("xylink.groups.cancel")},
		{"worker", "publish on xylink.groups.replay", refused, publish(worker.SubjectReplay)},
		{"worker", "subscribe to the events user's inbox", refused, subscribe("_INBOX_events.>")},
		{"worker", "subscribe to the default inbox", refused, subscribe("_INBOX.>")},
		{"worker", "the status page: the cluster, the latest failures, a command's events", allowed, func(ctx context.Context, c *client) error {
			if _, err := clusterstatus.Collect(ctx, c.js); err != nil {
				return err
			}
			if _, err := clusterstatus.RecentFailures(ctx, c.js, 10, 100); err != nil {
				return err
			}
			_, err := clusterstatus.LookupCommand(ctx, c.js, "e1", "perm-3")
			return err
		}},
		{"worker", "pull a reader's durable", refused, pullRequest(ev, "events-downstream")},
		{"worker", "its parked-shares bucket: read, write, watch", allowed, func(ctx context.Context, c *client) error {
			kv, err := c.js.KeyValue(ctx, worker.BucketParkedShares)
			if err != nil {
				return err
			}
			if _, err := kv.Put(ctx, "perm-probe", []byte(`{}`)); err != nil {
				return err
			}
			if _, err := kv.Get(ctx, "perm-probe"); err != nil {
				return err
			}
			if _, err := kv.ListKeys(ctx); err != nil {
				return err
			}
			return kv.Purge(ctx, "perm-probe")
		}},
		{"worker", "delete a reader's durable", refused, apiRequest("$JS.API.CONSUMER.DELETE."+ev+".events-downstream", "")},

		// operator: status, replay, events, the readers' durables
		// NATS checks a push consumer's deliver subject against nobody's permissions, and
		// no API subject tells push from pull: the operator's right to create consumers
		// (replay, events, the readers' durables) lets it copy what it reads anywhere.
		// The README and accounts.conf say so; this row notices when NATS changes it.
		{"operator", "push consumer delivering into xylink.groups.create (not restrictable)", allowed, pushConsumer(ev, worker.SubjectCreate)},
		{"operator", "status", allowed, func(ctx context.Context, c *client) error {
			cons, err := c.js.Consumer(ctx, cmds, worker.ConsumerWorkers)
			if err != nil {
				return err
			}
			for _, name := range []string{cmds, ev, parked} {
				if _, err := c.js.Stream(ctx, name); err != nil {
					return err
				}
			}
			if _, err := worker.ParkedMeetings(ctx, c.js); err != nil {
				return err
			}
			if _, _, err := ratelimit.Dispenser(ctx, c.js); err != nil {
				return err
			}
			if _, err := worker.Breakers(ctx, c.js); err != nil {
				return err
			}
			if _, err := worker.Replicas(ctx, c.js); err != nil {
				return err
			}
			_, err = cons.Info(ctx)
			return err
		}},
		{"operator", "replay: select from the failed events and the commands", allowed, func(ctx context.Context, c *client) error {
			if _, err := commands.Select(ctx, c.js, commands.Selection{Source: "failed"}); err != nil {
				return err
			}
			_, err := commands.Select(ctx, c.js, commands.Selection{Source: "commands"})
			return err
		}},
		{"operator", "replay: its checkpoint bucket", allowed, func(ctx context.Context, c *client) error {
			_, err := commands.LoadCheckpoint(ctx, c.js, "r-test")
			return err
		}},
		{"operator", "replay: publish a command", allowed, func(ctx context.Context, c *client) error {
			_, err := c.js.Publish(ctx, worker.SubjectCreate, []byte(`{"commandId":"perm-op","meetingRoomNumber":"910004217404","groupCount":2}`))
			return err
		}},
		{"operator", "replay: publish on xylink.groups.replay (stored in the stream)", allowed, func(ctx context.Context, c *client) error {
			m := nats.NewMsg(worker.SubjectReplay)
			m.Data = []byte(`{"commandId":"perm-replay","meetingRoomNumber":"910004217404","groupCount":2}`)
			m.Header.Set(worker.HeaderReplay, "r-perm")
			_, err := c.js.PublishMsg(ctx, m)
			return err
		}},
		{"operator", "replay: a failed command, and its new outcome", allowed, func(ctx context.Context, c *client) error {
			sel := commands.Selection{Source: "commands", Meeting: "910000000003"}
			items, err := commands.Select(ctx, c.js, sel)
			if err != nil {
				return err
			}
			if len(items) != 1 {
				return fmt.Errorf("selected %d commands, want 1", len(items))
			}
			sum, err := (&commands.Replayer{JS: c.js}).Run(ctx, ctx, &commands.Checkpoint{ID: sel.ID(), Selection: sel}, items)
			if err != nil {
				return err
			}
			if sum.Published != 1 || sum.FailedAgain["rejected"] != 1 {
				return fmt.Errorf("replay summary %+v", sum)
			}
			return nil
		}},
		{"operator", "events: follow the events stream", allowed, func(ctx context.Context, c *client) error {
			cons, err := c.js.OrderedConsumer(ctx, ev, jetstream.OrderedConsumerConfig{})
			if err != nil {
				return err
			}
			_, err = cons.Next(jetstream.FetchMaxWait(3 * time.Second))
			return err
		}},
		{"operator", "create a reader's durable", allowed, func(ctx context.Context, c *client) error {
			_, err := c.js.CreateOrUpdateConsumer(ctx, ev, jetstream.ConsumerConfig{Durable: "events-third", AckPolicy: jetstream.AckExplicitPolicy})
			return err
		}},
		{"operator", "publish xylink.groups.created", refused, publish(worker.SubjectCreated)},
		{"operator", "publish into xygroup.parked.>", refused, publish("xygroup.parked.x")},
		{"operator", "publish into xygroup.limiter.>", refused, publish(ratelimit.SubjectGrant)},
		{"operator", "write the xygroup-commands bucket", refused, publish("$KV." + worker.BucketCommands + ".forged")},
		{"operator", "write the xygroup-breakers bucket", refused, publish("$KV." + worker.BucketBreakers + ".forged")},
		{"operator", "read the xygroup-parked-shares bucket", allowed, func(ctx context.Context, c *client) error {
			kv, err := c.js.KeyValue(ctx, worker.BucketParkedShares)
			if err != nil {
				return err
			}
			if _, err := kv.Get(ctx, "perm-probe"); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
				return err
			}
			_, err = kv.ListKeys(ctx)
			return err
		}},
		{"operator", "write the xygroup-parked-shares bucket", refused, publish("$KV." + worker.BucketParkedShares + ".forged")},
		{"operator", "pull the workers' consumer", refused, pullRequest(cmds, worker.ConsumerWorkers)},
		{"operator", "subscribe to the worker's inbox", refused, subscribe("_INBOX_worker.>")},
		{"operator", "take over the workers' consumer", refused, func(ctx context.Context, c *client) error {
			_, err := c.js.CreateOrUpdateConsumer(ctx, cmds, jetstream.ConsumerConfig{Durable: worker.ConsumerWorkers, AckPolicy: jetstream.AckExplicitPolicy, FilterSubject: worker.SubjectCreate})
			return err
		}},

		// publisher: publish --wait, with no consumer
		{"publisher", "publish a command", allowed, func(ctx context.Context, c *client) error {
			_, err := c.js.Publish(ctx, worker.SubjectCreate, []byte(`{"commandId":"perm-pub","meetingRoomNumber":"910004217404","groupCount":2}`))
			return err
		}},
		{"publisher", "follow the events (publish --wait)", allowed, func(ctx context.Context, c *client) error {
			w, err := commands.NewWaiter(ctx, c.js, commands.RecordLookup(c.js, "e1"))
			if err == nil {
				w.Close()
			}
			return err
		}},
		{"publisher", "subscribe to xylink.groups.created", allowed, subscribe(worker.SubjectCreated)},
		{"publisher", "subscribe to cancel answers", allowed, subscribe("xylink.groups.cancel_rejected")},
		{"publisher", "subscribe to xylink.groups.failed.>", allowed, subscribe(worker.SubjectFailed + ".>")},
		{"publisher", "read a command's record (direct get of one key)", allowed, func(ctx context.Context, c *client) error {
			for {
				_, _, found, err := commands.RecordLookup(c.js, "e1")(ctx, "", "perm-1")
				if err != nil || found {
					return err
				}
				select {
				case <-ctx.Done():
					return errors.New("perm-1 has no terminal event in its record")
				case <-time.After(50 * time.Millisecond):
				}
			}
		}},
		{"publisher", "direct get of a commands-bucket key", allowed, func(ctx context.Context, c *client) error {
			_, err := c.nc.RequestWithContext(ctx, "$JS.API.DIRECT.GET."+kvCommands+".$KV."+worker.BucketCommands+".c.perm-1", nil)
			return err
		}},
		{"publisher", "create a pull consumer on the events stream", refused, func(ctx context.Context, c *client) error {
			_, err := c.js.CreateConsumer(ctx, ev, jetstream.ConsumerConfig{AckPolicy: jetstream.AckNonePolicy, InactiveThreshold: time.Minute})
			return err
		}},
		{"publisher", "push consumer delivering into $KV.xygroup-commands", refused, pushConsumer(ev, "$KV."+worker.BucketCommands+".c.x")},
		{"publisher", "push consumer delivering into xylink.groups.create", refused, pushConsumer(ev, worker.SubjectCreate)},
		{"publisher", "push consumer delivering into xygroup.parked.>", refused, pushConsumer(ev, "xygroup.parked.x")},
		{"publisher", "push consumer (durable API) delivering into xylink.groups.create", refused, apiRequest("$JS.API.CONSUMER.DURABLE.CREATE."+ev+".escape-durable",
			fmt.Sprintf(`{"stream_name":%q,"config":{"durable_name":"escape-durable","deliver_subject":%q,"ack_policy":"none"}}`, ev, worker.SubjectCreate))},
		{"publisher", "push consumer on the commands bucket", refused, pushConsumer(kvCommands, "$KV."+worker.BucketCommands+".c.x")},
		{"publisher", "write the xygroup-commands bucket", refused, publish("$KV." + worker.BucketCommands + ".c.forged")},
		{"publisher", "read the xygroup-meetings bucket", refused, func(ctx context.Context, c *client) error {
			_, err := c.nc.RequestWithContext(ctx, "$JS.API.DIRECT.GET.KV_"+worker.BucketMeetings+".$KV."+worker.BucketMeetings+".x", nil)
			return err
		}},
		{"publisher", "read the xygroup-parked-shares bucket", refused, func(ctx context.Context, c *client) error {
			_, err := c.nc.RequestWithContext(ctx, "$JS.API.DIRECT.GET.KV_"+worker.BucketParkedShares+".$KV."+worker.BucketParkedShares+".x", nil)
			return err
		}},
		{"publisher", "publish xylink.groups.created", refused, publish(worker.SubjectCreated)},
		{"publisher", "publish on xylink.groups.replay", refused, publish(worker.SubjectReplay)},
		{"publisher", "publish into xygroup.parked.>", refused, publish("xygroup.parked.x")},
		{"publisher", "pull a reader's durable (MSG.NEXT)", refused, pullRequest(ev, "events-downstream")},
		{"publisher", "ack on a reader's durable", refused, publish("$JS.ACK." + ev + ".events-downstream.1.1.1.0.0")},
		{"publisher", "subscribe to the commands", refused, subscribe(worker.SubjectCreate)},
		{"publisher", "subscribe to xygroup.limiter.>", refused, subscribe("xygroup.limiter.>")},
		{"publisher", "subscribe to the worker's inbox", refused, subscribe("_INBOX_worker.>")},
		{"publisher", "subscribe to the events user's inbox", refused, subscribe("_INBOX_events.>")},
		{"publisher", "subscribe to the default inbox", refused, subscribe("_INBOX.>")},

		// events
		{"events", "subscribe to another user's inbox prefix", refused, subscribe("_INBOX_worker.>")},
		{"events", "subscribe to the default inbox", refused, subscribe("_INBOX.>")},
		{"events", "push consumer delivering into xylink.groups.create", refused, pushConsumer(ev, worker.SubjectCreate)},
		{"events", "push consumer delivering into $KV.xygroup-commands", refused, pushConsumer(ev, "$KV."+worker.BucketCommands+".c.x")},
		{"events", "follow the events as publish --wait does (NewWaiter says so)", refused, func(ctx context.Context, c *client) error {
			w, err := commands.NewWaiter(ctx, c.js, nil)
			time.Sleep(200 * time.Millisecond)
			c.refusals() // the refusal must come from NewWaiter itself
			if err == nil {
				w.Close()
			}
			return err
		}},
		{"events", "create any consumer", refused, func(ctx context.Context, c *client) error {
			_, err := c.js.OrderedConsumer(ctx, ev, jetstream.OrderedConsumerConfig{})
			return err
		}},
		{"events", "pull another reader's durable (MSG.NEXT)", refused, pullRequest(ev, "events-other")},
		{"events", "ack on another reader's durable", refused, publish("$JS.ACK." + ev + ".events-other.1.1.1.0.0")},
		{"events", "publish a command", refused, publish(worker.SubjectCreate)},
		{"events", "publish on xylink.groups.replay", refused, publish(worker.SubjectReplay)},
		{"events", "publish a cancel", refused, publish("xylink.groups.cancel")},

		// what would destroy something, last
		{"worker", "purge the events stream", refused, func(ctx context.Context, c *client) error {
			s, err := c.js.Stream(ctx, ev)
			if err != nil {
				return err
			}
			return s.Purge(ctx)
		}},
		{"operator", "purge the commands stream", refused, apiRequest("$JS.API.STREAM.PURGE."+cmds, "")},
		{"operator", "delete the workers' consumer", refused, func(ctx context.Context, c *client) error {
			return c.js.DeleteConsumer(ctx, cmds, worker.ConsumerWorkers)
		}},
		{"worker", "delete a reader's durable", refused, func(ctx context.Context, c *client) error { return c.js.DeleteConsumer(ctx, ev, "events-third") }},
		{"publisher", "delete a reader's durable", refused, func(ctx context.Context, c *client) error { return c.js.DeleteConsumer(ctx, ev, "events-downstream") }},
		{"events", "delete a durable", refused, func(ctx context.Context, c *client) error { return c.js.DeleteConsumer(ctx, ev, "events-other") }},
		{"worker", "delete XYGROUP_PARKED", refused, func(ctx context.Context, c *client) error { return c.js.DeleteStream(ctx, parked) }},
		{"events", "delete the events stream", refused, func(ctx context.Context, c *client) error { return c.js.DeleteStream(ctx, ev) }},
		{"worker", "delete the events stream", refused, func(ctx context.Context, c *client) error { return c.js.DeleteStream(ctx, ev) }},
	}
	for _, row := range table {
		t.Run(row.user+": "+row.action, func(t *testing.T) {
			err := connectAs(t, s, row.user).try(row.op)
			switch {
			case row.want && err != nil:
				t.Errorf("%s: %s: refused (%v), it needs it", row.user, row.action, err)
			case !row.want && err == nil:
				t.Errorf("%s: %s: allowed", row.user, row.action)
			}
		})
	}
	if errs := workerErrs(); len(errs) > 0 {
		t.Errorf("the worker was refused something it needs: %v", errs)
	}
}

// A commands stream and shared consumer created before replays had their own
// subject: the worker user may add xylink.groups.replay to both; a user without
// $JS.API.STREAM.UPDATE stops with an error that says so.
func TestNATSWorkerUpgradesCommandsStream(t *testing.T) {
	s := startFromConfig(t)
	ctx := context.Background()
	wc := connectAs(t, s, "worker")
	old := worker.StreamSettings{}.CommandsStream()
	old.Subjects = []string{worker.SubjectCreate}
	if _, err := wc.js.CreateStream(ctx, old); err != nil {
		t.Fatal(err)
	}
	oldCons := worker.StreamSettings{}.WorkersConsumer()
	oldCons.FilterSubjects, oldCons.FilterSubject = nil, worker.SubjectCreate
	if _, err := wc.js.CreateConsumer(ctx, worker.StreamCommands, oldCons); err != nil {
		t.Fatal(err)
	}
	// Without the right to update the stream (the operator stands in for a worker
	// user whose permissions predate replays' subject).
	oc := connectAs(t, s, "operator")
	_, err := worker.Setup(ctx, oc.js, worker.StreamSettings{}, zerolog.Nop())
	if !jsconfig.IsMisconfigured(err) || !strings.Contains(err.Error(), "publish $JS.API.STREAM.UPDATE.XYLINK_GROUP_COMMANDS") {
		t.Fatalf("want a misconfiguration naming the permission, got %v", err)
	}
	// The worker user.
	if _, err := worker.Setup(ctx, wc.js, worker.StreamSettings{}, zerolog.Nop()); err != nil {
		t.Fatalf("the worker could not upgrade the commands stream and consumer: %v", err)
	}
	st, err := wc.js.Stream(ctx, worker.StreamCommands)
	if err != nil {
		t.Fatal(err)
	}
	if got := st.CachedInfo().Config.Subjects; !slices.Contains(got, worker.SubjectReplay) {
		t.Fatalf("stream subjects %v", got)
	}
	c, err := wc.js.Consumer(ctx, worker.StreamCommands, worker.ConsumerWorkers)
	if err != nil {
		t.Fatal(err)
	}
	if got := c.CachedInfo().Config.FilterSubjects; !slices.Contains(got, worker.SubjectReplay) {
		t.Fatalf("consumer filters %v", got)
	}
	select {
	case err := <-wc.perm:
		t.Fatalf("the worker was refused something it needs: %v", err)
	default:
	}
}

// freePort reserves a TCP port on the loopback and gives it back.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// Three nodes from the shipped config form a cluster over authenticated routes,
// and a server that knows no route password does not join it.
func TestNATSClusterRoutes(t *testing.T) {
	ports := []int{freePort(t), freePort(t), freePort(t)}
	var nodes []*server.Server
	for i := range ports {
		opts := serverOptions(t, fmt.Sprintf("nats-%d", i))
		if opts.HTTPHost == "0.0.0.0" || opts.HTTPHost == "" {
			t.Errorf("monitoring listens on %q: all interfaces", opts.HTTPHost)
		}
		opts.Cluster.Host, opts.Cluster.Port = "127.0.0.1", ports[i]
		for j, r := range opts.Routes { // the configured routes, with their credentials, on this test's ports
			if r.User == nil || r.Hostname() != fmt.Sprintf("nats-%d", j) {
				t.Fatalf("route %s", r.Redacted())
			}
			r.Host = fmt.Sprintf("127.0.0.1:%d", ports[j])
		}
		nodes = append(nodes, start(t, opts))
	}
	routed := func(s *server.Server, want int) bool {
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) {
			if s.NumRoutes() >= want {
				return true
			}
			time.Sleep(50 * time.Millisecond)
		}
		return false
	}
	for i, s := range nodes {
		if !routed(s, 2) {
			t.Fatalf("nats-%d has %d routes: the nodes do not form a cluster", i, s.NumRoutes())
		}
	}
	before := nodes[0].NumRoutes()

	// An intruder on the route port, without the route password.
	opts := &server.Options{ServerName: "intruder", Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true,
		Cluster: server.ClusterOpts{Name: "xygroup", Host: "127.0.0.1", Port: -1},
		Routes:  []*url.URL{{Scheme: "nats-route", Host: fmt.Sprintf("127.0.0.1:%d", ports[0])}}}
	intruder := start(t, opts)
	time.Sleep(3 * time.Second)
	if n := intruder.NumRoutes(); n > 0 || nodes[0].NumRoutes() > before {
		t.Errorf("a server without the route password joined the cluster: it has %d routes, nats-0 %d (was %d)", n, nodes[0].NumRoutes(), before)
	}
}

// The shipped config serves clients over TLS only (certificates from
// gen-certs.sh) and verifies the routes' certificates; no user of the system
// account exists.
func TestNATSConfigTLS(t *testing.T) {
	opts := serverOptions(t, "nats-0")
	if opts.TLSConfig == nil || opts.TLSVerify {
		t.Errorf("client TLS %v, verify %v: want server TLS, users by password", opts.TLSConfig != nil, opts.TLSVerify)
	}
	if opts.Cluster.TLSConfig == nil || opts.Cluster.TLSConfig.ClientAuth != tls.RequireAndVerifyClientCert {
		t.Errorf("route TLS %v: want every node's certificate verified", opts.Cluster.TLSConfig != nil)
	}
	for _, u := range opts.Users {
		if u.Account != nil && (u.Account.Name == opts.SystemAccount || u.Account.Name == server.DEFAULT_SYSTEM_ACCOUNT) {
			t.Errorf("user %s in the system account", u.Username)
		}
	}
	opts.Cluster.Port, opts.Routes, opts.Cluster.Name = 0, nil, ""
	s := start(t, opts)
	connectAs(t, s, "operator") // over TLS, verified against ca.pem

	if nc, err := nats.Connect(s.ClientURL(), nats.UserInfo("operator", passwords["operator"]), nats.MaxReconnects(0)); err == nil {
		nc.Close()
		t.Error("a client without TLS connected")
	}
	if nc, err := nats.Connect(tlsURL(s), nats.UserInfo("operator", passwords["operator"]), nats.MaxReconnects(0)); err == nil {
		nc.Close()
		t.Error("a client that does not know the CA connected (it trusted an unknown certificate)")
	}
	_, certs := tlsConfig(t)
	if nc, err := nats.Connect(tlsURL(s), nats.UserInfo("sys", "s-pass"), nats.RootCAs(filepath.Join(certs, "ca.pem")), nats.MaxReconnects(0)); err == nil {
		nc.Close()
		t.Error("the sys user connected")
	}
}
