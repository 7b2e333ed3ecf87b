// Package workertest starts the real parts a worker test needs: an embedded
// nats-server, the XYLink sandbox over HTTP, workers; and collects events.
package workertest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/xygroup/xygroup/worker"
	"github.com/xygroup/xygroup/worker/contract"
	"github.com/xygroup/xygroup/worker/embedded"
	"github.com/xygroup/xygroup/xylink"
	"github.com/xygroup/xygroup/xylink/sandbox"
)

// Tenant the sandbox and clients of these helpers share.
const (
	Enterprise = "test-enterprise"
	Token      = "test-token-0123456789"
)

// StartNATS starts a JetStream server on a free loopback port, stopped at cleanup.
func StartNATS(t testing.TB) *embedded.Server {
	t.Helper()
	s, err := embedded.Start(embedded.Config{Listen: "127.0.0.1:0", StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)
	return s
}

// Connect opens a connection of its own, closed at cleanup.
func Connect(t testing.TB, s *embedded.Server) *nats.Conn {
	t.Helper()
	nc, err := s.Connect(nats.Name(t.Name()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// JetStream for a connection.
func JetStream(t testing.TB, nc *nats.Conn) jetstream.JetStream {
	t.Helper()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

// StartSandbox serves the sandbox with the Enterprise tenant (and any in cfg).
func StartSandbox(t testing.TB, cfg sandbox.Config) *sandbox.Server {
	t.Helper()
	cfg.Enterprises = append(cfg.Enterprises, sandbox.Enterprise{ID: Enterprise, Token: Token})
	sb, err := sandbox.Start(cfg, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sb.Close(context.Background()) })
	return sb
}

// Client for the sandbox with the Enterprise tenant (and extra tenants).
func Client(t testing.TB, sb *sandbox.Server, extra ...xylink.Credentials) *xylink.Client {
	t.Helper()
	c, err := xylink.NewClient(sb.URL, xylink.WithTenants(append(extra, xylink.Credentials{EnterpriseID: Enterprise, Token: Token})...))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// Running is a worker started by StartWorker.
type Running struct {
	*worker.Worker
	Stop func() error // cancels its context (as SIGTERM does) and waits for Run
}

// StartWorker runs a worker on its own connection until Stop or cleanup.
func StartWorker(t testing.TB, s *embedded.Server, c *xylink.Client, opts ...worker.Option) *Running {
	t.Helper()
	return StartWorkerOn(t, Connect(t, s), c, opts...)
}

// StartWorkerOn runs a worker on the connection nc until Stop or cleanup.
func StartWorkerOn(t testing.TB, nc *nats.Conn, c *xylink.Client, opts ...worker.Option) *Running {
	t.Helper()
	opts = append([]worker.Option{worker.WithDefaultEnterprise(Enterprise), worker.WithRate(10000, nil),
		worker.WithBackoff(worker.Backoff{Initial: 50 * time.Millisecond, Max: 500 * time.Millisecond})}, opts...)
	w, err := worker.New(nc, c, c, opts...)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	var stopped bool
	var result error
	stop := func() error {
		if !stopped {
			stopped = true
			cancel()
			select {
			case result = <-done:
			case <-time.After(60 * time.Second):
				result = errors.New("worker did not stop within 60s")
			}
		}
		return result
	}
	t.Cleanup(func() { _ = stop() })
	return &Running{Worker: w, Stop: stop}
}

// Publish publishes raw commands, each with its Nats-Msg-Id when id is not empty.
func Publish(t testing.TB, js jetstream.JetStream, id string, payload []byte, headers ...string) {
	t.Helper()
	PublishOn(t, js, worker.SubjectCreate, id, payload, headers...)
}

// PublishOn is Publish on another subject of the commands stream.
func PublishOn(t testing.TB, js jetstream.JetStream, subject, id string, payload []byte, headers ...string) {
	t.Helper()
	m := nats.NewMsg(subject)
	m.Data = payload
	if id != "" {
		m.Header.Set(nats.MsgIdHdr, id)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		m.Header.Set(headers[i], headers[i+1])
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for {
		_, err := js.PublishMsg(ctx, m)
		if err == nil {
			return
		}
		// The worker creates the stream; before that there is no responder.
		if !errors.Is(err, nats.ErrNoResponders) && !errors.Is(err, jetstream.ErrNoStreamResponse) {
			t.Fatalf("publish: %v", err)
		}
		select {
		case <-ctx.Done():
			t.Fatalf("publish: %v", err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Command builds a valid manual-mode command as JSON.
func Command(id, meeting string, extra ...string) []byte {
	fields := fmt.Sprintf(`"commandId":%q,"meetingRoomNumber":%q,"mode":"manual","groupList":[{"groupName":"分组1","memberList":[{"id":101990441,"type":5,"participantNumber":"18961782725"}]}]`, id, meeting)
	for i := 0; i+1 < len(extra); i += 2 {
		fields += fmt.Sprintf(",%q:%s", extra[i], extra[i+1])
	}
	return []byte("{" + fields + "}")
}

// Event is a received event with its subject and headers.
type Event struct {
	Subject string
	Header  nats.Header
	Data    []byte
	Fields  map[string]any
}

// CommandID of the event.
func (e Event) CommandID() string { s, _ := e.Fields["commandId"].(string); return s }

// Terminal reports whether the event ends its command.
func (e Event) Terminal() bool { return e.Subject != worker.SubjectWaiting }

// AwaitTerminal reads the events stream from the start until n commands have a
// terminal event, and fails the test if that takes longer than within. It
// returns every event by commandId.
func AwaitTerminal(t testing.TB, js jetstream.JetStream, n int, within time.Duration) map[string][]Event {
	t.Helper()
	byCommand, terminal := CollectTerminal(t, js, n, within)
	if terminal < n {
		t.Fatalf("%d of %d commands have a terminal event after %v", terminal, n, within)
	}
	return byCommand
}

// CollectTerminal reads the events stream from the start until n commands
// have a terminal event or within passes, and returns what it read by
// commandId, with the number of commands that have a terminal event.
func CollectTerminal(t testing.TB, js jetstream.JetStream, n int, within time.Duration) (map[string][]Event, int) {
	t.Helper()
	byCommand := map[string][]Event{}
	terminal := map[string]bool{}
	if n <= 0 {
		return byCommand, 0
	}
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	r := awaitReader(t, ctx, js, contract.ReadOptions{Follow: true, Wait: within})
	for msg, err := range r.Messages(ctx) {
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			t.Fatalf("after %d of %d terminal events: %v", len(terminal), n, err)
		}
		e := eventOf(t, msg)
		byCommand[e.CommandID()] = append(byCommand[e.CommandID()], e)
		if e.Terminal() {
			terminal[e.CommandID()] = true
		}
		if len(terminal) >= n {
			break
		}
	}
	return byCommand, len(terminal)
}

// StoredEvents returns every event the events stream holds now, in order.
func StoredEvents(t testing.TB, js jetstream.JetStream) []Event {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out []Event
	for msg, err := range awaitReader(t, ctx, js, contract.ReadOptions{}).Messages(ctx) {
		if err != nil {
			t.Fatalf("after %d events: %v", len(out), err)
		}
		out = append(out, eventOf(t, msg))
	}
	return out
}

// awaitReader opens a reader of the events stream once the stream exists (a
// worker creates it on start).
func awaitReader(t testing.TB, ctx context.Context, js jetstream.JetStream, o contract.ReadOptions) *contract.Reader {
	t.Helper()
	var r *contract.Reader
	within := 30 * time.Second
	if d, ok := ctx.Deadline(); ok {
		within = time.Until(d)
	}
	Eventually(t, within, func() bool {
		var err error
		r, err = contract.NewReader(ctx, js, o)
		return err == nil
	}, "a reader of the events stream")
	return r
}

func eventOf(t testing.TB, msg contract.Msg) Event {
	t.Helper()
	e := Event{Subject: msg.Subject(), Header: msg.Headers(), Data: msg.Data()}
	if err := json.Unmarshal(msg.Data(), &e.Fields); err != nil {
		t.Fatalf("event is not JSON: %.200s", msg.Data())
	}
	return e
}

// TerminalCount is how many terminal events the events stream holds.
func TerminalCount(t testing.TB, js jetstream.JetStream) int {
	t.Helper()
	s, err := js.Stream(context.Background(), worker.StreamEvents)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return 0 // a worker creates it on start, after the commands stream
	}
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(context.Background(), jetstream.WithSubjectFilter(">"))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for subj, c := range info.State.Subjects {
		if contract.IsTerminal(subj) {
			n += int(c)
		}
	}
	return n
}

// AwaitStream waits until the stream exists (a worker creates it on start).
func AwaitStream(t testing.TB, js jetstream.JetStream, name string) {
	t.Helper()
	Eventually(t, 30*time.Second, func() bool {
		_, err := js.Stream(context.Background(), name)
		return err == nil
	}, "stream "+name+" created")
}

// AwaitConsumerIdle waits until the shared consumer has nothing pending or in
// flight: every published command was handled.
func AwaitConsumerIdle(t testing.TB, js jetstream.JetStream, within time.Duration) {
	t.Helper()
	Eventually(t, within, func() bool {
		// The consumer's pending count follows the stream a moment later:
		// idle also means acknowledged up to the stream's last message.
		s, err := js.Stream(context.Background(), worker.StreamCommands)
		if err != nil {
			return false
		}
		si, err := s.Info(context.Background())
		if err != nil {
			return false
		}
		c, err := js.Consumer(context.Background(), worker.StreamCommands, worker.ConsumerWorkers)
		if err != nil {
			return false
		}
		info, err := c.Info(context.Background())
		return err == nil && info.NumPending == 0 && info.NumAckPending == 0 && info.AckFloor.Stream >= si.State.LastSeq
	}, "the shared consumer idle")
}

// SyncBuffer is a bytes.Buffer that loggers on several goroutines may write to.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Len is the number of bytes written.
func (s *SyncBuffer) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Len()
}

// Restartable is an embedded JetStream server on disk that a test can shut down
// and start again on the same port and store, as a NATS restart does.
type Restartable struct {
	t      testing.TB
	dir    string
	listen string
	mu     sync.Mutex
	srv    *embedded.Server
}

// StartRestartableNATS starts a Restartable server on a free loopback port,
// stopped at cleanup.
func StartRestartableNATS(t testing.TB) *Restartable {
	t.Helper()
	r := &Restartable{t: t, dir: t.TempDir(), listen: "127.0.0.1:0"}
	r.Start()
	r.listen = strings.TrimPrefix(r.Server().ClientURL(), "nats://")
	t.Cleanup(r.Stop)
	return r
}

// Start starts the server (again) on its port and store.
func (r *Restartable) Start() {
	r.t.Helper()
	s, err := embedded.Start(embedded.Config{Listen: r.listen, StoreDir: r.dir})
	if err != nil {
		r.t.Fatal(err)
	}
	r.mu.Lock()
	r.srv = s
	r.mu.Unlock()
}

// Stop shuts the server down; a no-op when it is not running.
func (r *Restartable) Stop() {
	r.mu.Lock()
	s := r.srv
	r.srv = nil
	r.mu.Unlock()
	if s != nil {
		s.Stop()
	}
}

// Server is the running server (nil while stopped).
func (r *Restartable) Server() *embedded.Server {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.srv
}

// URL is the server's client URL, the same across restarts.
func (r *Restartable) URL() string { return "nats://" + r.listen }

// Connect opens a connection that reconnects forever, quickly; closed at cleanup.
func (r *Restartable) Connect(opts ...nats.Option) *nats.Conn {
	r.t.Helper()
	nc, err := nats.Connect(r.URL(), append([]nats.Option{nats.Name(r.t.Name()), nats.MaxReconnects(-1),
		nats.ReconnectWait(50 * time.Millisecond)}, opts...)...)
	if err != nil {
		r.t.Fatal(err)
	}
	r.t.Cleanup(nc.Close)
	return nc
}

// StartCluster starts a three-node JetStream cluster in this process (each node
// on loopback with its own store), stopped at cleanup, and returns a connection
// to it once JetStream has its meta leader.
func StartCluster(t testing.TB) *nats.Conn {
	t.Helper()
	free := func() string {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		return ln.Addr().String()
	}
	var clients, routeAddrs, routes []string
	for range 3 {
		clients, routeAddrs = append(clients, free()), append(routeAddrs, free())
		routes = append(routes, "nats-route://"+routeAddrs[len(routeAddrs)-1])
	}
	nodes := make([]*embedded.Server, 3)
	errs := make([]error, 3)
	var wg sync.WaitGroup
	for i := range nodes {
		dir := t.TempDir()
		wg.Go(func() {
			nodes[i], errs[i] = embedded.Start(embedded.Config{Name: fmt.Sprintf("n%d", i), Listen: clients[i], StoreDir: dir,
				ClusterName: "xygroup-test", ClusterListen: routeAddrs[i], Routes: routes})
		})
	}
	wg.Wait()
	for i, n := range nodes {
		if n != nil {
			t.Cleanup(n.Stop)
		}
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
	}
	var urls []string
	for _, c := range clients {
		urls = append(urls, "nats://"+c)
	}
	nc, err := nats.Connect(strings.Join(urls, ","), nats.Name(t.Name()), nats.MaxReconnects(-1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := nc.Request("$JS.API.INFO", nil, time.Second); err == nil {
			return nc
		}
		if time.Now().After(deadline) {
			t.Fatal("the cluster has no JetStream meta leader within 30s")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Eventually waits until cond holds, looking every 10 ms, and fails the test
// naming what it waited for if within passes first.
func Eventually(t testing.TB, within time.Duration, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %v: %s", within, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
