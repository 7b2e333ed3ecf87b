package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/xygroup/xygroup/xylink/sandbox"
)

// Tenant is an extra enterprise, given to the sandbox and, through a tenants
// file, to the workers.
type Tenant struct {
	ID    string
	Token string
	Rate  float64
}

// Options describe a scenario's set-up.
type Options struct {
	// Nodes: 3 for a cluster, 1 for a single server, 0 for the embedded default
	// (then Workers must be 1).
	Nodes   int
	Workers int
	// V2 gives the workers 2.0 credentials (client id and secret) instead of
	// the 1.0 token.
	V2 bool
	// Tenants are further enterprises (through XYGROUP_TENANTS_FILE).
	Tenants []Tenant
	// Rate is the default tenant's rate (sandbox and workers); 0: 20.
	Rate float64
	// WorkerEnv are further worker variables.
	WorkerEnv map[string]string
	// NATSProxy puts each worker's NATS connection through a TCP proxy.
	NATSProxy bool
	// Seed of the fault proxy's RNG.
	Seed uint64
}

// Harness is one scenario's world: NATS, the sandbox behind the fault proxy,
// the workers, a publisher and the event log.
type Harness struct {
	T       *testing.T
	Bins    Binaries
	Dir     string
	Opts    Options
	NATS    *NATSCluster // nil on the embedded default
	Sandbox *Sandbox
	Proxy   *FaultProxy
	Workers []*Worker
	Config  WorkerConfig
	NC      *nats.Conn
	JS      jetstream.JetStream
	// NATSURL is where the workers' NATS servers listen (the embedded one's
	// on the embedded default).
	NATSURL string
	Events  *EventLog
	Pub     *Publisher
	// Rates is each enterprise's limit.
	Rates map[string]float64
	// Secrets are the configured credentials that must never be printed.
	Secrets []string
	// Started is when the scenario began publishing (set by Publish).
	Started  time.Time
	Commands []Command
	notes    []string
	// resendsExpected: why a success may be sent again here (see ResendsExpected).
	resendsExpected string
	// learning: the network delays requests by an amount the workers must
	// learn (see GuardLearns).
	learning string
}

// SuiteRateGuard is the XYGROUP_RATE_GUARD the suite's workers run with
// unless a scenario sets its own.
const SuiteRateGuard = 40 * time.Millisecond

// New sets a scenario up and waits until the workers created the streams.
func New(t *testing.T, opts Options) *Harness {
	t.Helper()
	if opts.Rate == 0 {
		opts.Rate = 20
	}
	if opts.Workers == 0 {
		opts.Workers = 1
	}
	h := &Harness{T: t, Bins: bins, Opts: opts, Rates: map[string]float64{Enterprise: opts.Rate},
		Secrets: []string{Token, ClientSecret}}
	h.Dir = scenarioDir(t)
	cfg := sandbox.Config{Rate: opts.Rate}
	for _, tn := range opts.Tenants {
		cfg.Enterprises = append(cfg.Enterprises, sandbox.Enterprise{ID: tn.ID, Token: tn.Token, Rate: tn.Rate})
		h.Rates[tn.ID] = tn.Rate
		h.Secrets = append(h.Secrets, tn.Token)
	}
	h.Sandbox = StartSandbox(t, cfg)
	h.Proxy = NewFaultProxy(t, h.Sandbox.URL, opts.Seed+1)

	h.Config = WorkerConfig{BaseURL: h.Proxy.URL, EnterpriseID: Enterprise, Env: map[string]string{}}
	if opts.V2 {
		h.Config.ClientID, h.Config.ClientSecret = ClientID, ClientSecret
	} else {
		h.Config.Token = Token
	}
	if opts.Rate != 20 {
		h.Config.Env["XYGROUP_RATE"] = formatFloat(opts.Rate)
	}
	// The sandbox and its proxy, which time every arrival, share two cores
	// with the workers and the NATS servers: their arrival times carry this
	// machine's scheduling delay (tens of milliseconds when it is loaded), which
	// is what the rate guard allows for. The suite runs with the allowance such
	// a host needs; TestNetworkJitter keeps the default against added jitter.
	h.Config.Env["XYGROUP_RATE_GUARD"] = SuiteRateGuard.String()
	if len(opts.Tenants) > 0 {
		h.Config.TenantsFile = h.writeTenants(opts.Tenants)
	}
	for k, v := range opts.WorkerEnv {
		h.Config.Env[k] = v
	}
	natsURL := ""
	if opts.Nodes > 0 {
		h.NATS = StartNATSCluster(t, bins.NATSServer, h.Dir, opts.Nodes)
		h.Config.NATSURL = h.NATS.URLs()
		if opts.Nodes > 1 {
			h.Config.StreamReplicas = 3
		}
		natsURL = h.NATS.URLs()
	} else {
		h.Config.EmbeddedListen = FreeAddr(t)
		natsURL = "nats://" + h.Config.EmbeddedListen
	}
	for i := range opts.Workers {
		h.Workers = append(h.Workers, StartWorker(t, bins.Xygroup, h.Dir, i, h.Config, opts.NATSProxy))
	}
	h.NATSURL = natsURL
	var err error
	h.NC, err = nats.Connect(natsURL, nats.Name("e2e"), nats.MaxReconnects(-1), nats.ReconnectWait(250*time.Millisecond),
		nats.RetryOnFailedConnect(true), nats.NoCallbacksAfterClientClose())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.NC.Close)
	if h.JS, err = jetstream.New(h.NC); err != nil {
		t.Fatal(err)
	}
	h.Pub = AwaitStream(t, h.JS, 90*time.Second)
	h.Events = FollowEvents(t, h.JS)
	if !until(60*time.Second, 100*time.Millisecond, h.Events.Live) {
		t.Fatalf("cannot follow the events stream: %v", h.Events.err)
	}
	h.AwaitReady(90 * time.Second)
	return h
}

// AwaitReady waits until every running worker answers /readyz with 200.
func (h *Harness) AwaitReady(d time.Duration) {
	h.T.Helper()
	for _, w := range h.Workers {
		if !w.Running() {
			continue
		}
		if !until(d, 200*time.Millisecond, w.Ready) {
			h.T.Fatalf("worker %d not ready after %v; its log ends:\n%s", w.Index, d, tail(w.LogPath, 10))
		}
	}
}

// AddWorker starts one more worker with the same configuration.
func (h *Harness) AddWorker() *Worker {
	w := StartWorker(h.T, h.Bins.Xygroup, h.Dir, len(h.Workers), h.Config, h.Opts.NATSProxy)
	h.Workers = append(h.Workers, w)
	return w
}

// WorkerAt is the running worker that holds the connection whose client side
// is remoteAddr (as the fault proxy sees it), or nil.
func (h *Harness) WorkerAt(remoteAddr string) *Worker {
	var pids []int
	for _, w := range h.Workers {
		if pid := w.Pid(); pid != 0 {
			pids = append(pids, pid)
		}
	}
	pid, err := socketOwner(remoteAddr, pids)
	if err != nil {
		return nil
	}
	for _, w := range h.Workers {
		if w.Pid() == pid {
			return w
		}
	}
	return nil
}

// AwaitCreated waits up to d until the sandbox created groups n times (the
// moment to inject a fault "mid-run"); it fails the test otherwise.
func (h *Harness) AwaitCreated(n int, d time.Duration) {
	h.T.Helper()
	if !until(d, 50*time.Millisecond, func() bool { return h.APICreated() >= n }) {
		h.T.Fatalf("only %d of %d groups created at the sandbox after %v", h.APICreated(), n, d)
	}
}

// APICreated is how many creates the sandbox answered 200.
func (h *Harness) APICreated() int {
	n := 0
	for _, r := range h.Sandbox.Requests() {
		if r.Endpoint == "dynamicGroup" && r.Status == 200 {
			n++
		}
	}
	return n
}

// CreatedCount is how many created events the log holds.
func (h *Harness) CreatedCount() int {
	n := 0
	for _, e := range h.Events.Events() {
		if e.Subject == SubjectCreated {
			n++
		}
	}
	return n
}

// Publish publishes commands and remembers them for the check.
func (h *Harness) Publish(cmds []Command) {
	h.T.Helper()
	if h.Started.IsZero() {
		h.Started = time.Now()
	}
	h.Commands = append(h.Commands, cmds...)
	h.Pub.PublishAll(h.T, cmds)
}

func (h *Harness) writeTenants(tenants []Tenant) string {
	type entry struct {
		EnterpriseID string  `json:"enterpriseId"`
		Token        string  `json:"token"`
		Rate         float64 `json:"rate,omitempty"`
	}
	var f struct {
		Tenants []entry `json:"tenants"`
	}
	for _, tn := range tenants {
		f.Tenants = append(f.Tenants, entry{tn.ID, tn.Token, tn.Rate})
	}
	b, _ := json.MarshalIndent(f, "", "  ")
	path := filepath.Join(h.Dir, "tenants.json")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		h.T.Fatal(err)
	}
	return path
}

// scenarioDir holds a scenario's configs, stores and logs. It is removed when
// the scenario passes and kept (and named) when it fails.
func scenarioDir(t *testing.T) string {
	dir, err := os.MkdirTemp("", "xygroup-e2e-"+sanitize(t.Name())+"-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() || keepLogs {
			t.Logf("logs and stores kept in %s", dir)
			return
		}
		_ = os.RemoveAll(dir)
	})
	return dir
}

func sanitize(s string) string {
	b := []byte(s)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
			b[i] = '_'
		}
	}
	return string(b)
}

func formatFloat(f float64) string {
	b, _ := json.Marshal(f)
	return string(b)
}

// WorkersOnNode lists the indexes of the running workers connected to NATS
// node i.
func (h *Harness) WorkersOnNode(i int) []int {
	byPid := map[int]int{}
	var pids []int
	for _, w := range h.Workers {
		if pid := w.Pid(); pid != 0 {
			byPid[pid] = w.Index
			pids = append(pids, pid)
		}
	}
	var out []int
	for _, pid := range clientsOf(h.NATS.Nodes[i].ClientPort, pids) {
		out = append(out, byPid[pid])
	}
	return out
}
