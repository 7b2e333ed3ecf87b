package e2e

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"
)

// WorkerConfig is what the workers are given, only through the environment
// variables of the README.
type WorkerConfig struct {
	// NATSURL: empty runs the embedded default (the worker starts its own
	// JetStream server, listening on EmbeddedListen).
	NATSURL        string
	EmbeddedListen string
	BaseURL        string
	EnterpriseID   string
	// Token (signature 1.0), or ClientID and ClientSecret (2.0).
	Token, ClientID, ClientSecret string
	TenantsFile                   string
	StreamReplicas                int
	// Env holds any further variables (XYGROUP_ACK_WAIT, XYGROUP_CONCURRENCY, ...).
	Env map[string]string
}

func (c WorkerConfig) environ(dataDir, httpAddr, natsURL string) []string {
	env := baseEnv()
	add := func(k, v string) {
		if v != "" {
			env = append(env, k+"="+v)
		}
	}
	add("NATS_URL", natsURL)
	add("XYGROUP_EMBEDDED_LISTEN", c.EmbeddedListen)
	add("XYGROUP_DATA_DIR", dataDir)
	add("XYGROUP_HTTP_ADDR", httpAddr)
	add("XYLINK_BASE_URL", c.BaseURL)
	add("XYLINK_ENTERPRISE_ID", c.EnterpriseID)
	add("XYLINK_TOKEN", c.Token)
	add("XYLINK_CLIENT_ID", c.ClientID)
	add("XYLINK_CLIENT_SECRET", c.ClientSecret)
	add("XYGROUP_TENANTS_FILE", c.TenantsFile)
	if c.StreamReplicas > 0 {
		add("XYGROUP_STREAM_REPLICAS", fmt.Sprint(c.StreamReplicas))
	}
	add("XYGROUP_LOG_FORMAT", "json")
	keys := make([]string, 0, len(c.Env))
	for k := range c.Env {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		add(k, c.Env[k])
	}
	return env
}

// Worker is one `xygroup worker` process with its own data dir and HTTP port.
type Worker struct {
	Index    int
	DataDir  string
	HTTPAddr string
	// NATSProxy, when the worker was started behind one, carries its NATS
	// connection: blackhole it to cut the worker off from NATS while it still
	// reaches the API.
	NATSProxy *TCPProxy
	*Process
}

// StartWorker starts worker i. viaProxy puts its NATS connection (to the first
// URL of cfg.NATSURL) through a TCP proxy.
func StartWorker(tb testing.TB, bin, dir string, i int, cfg WorkerConfig, viaProxy bool) *Worker {
	tb.Helper()
	w := &Worker{Index: i, DataDir: filepath.Join(dir, fmt.Sprintf("worker-%d-data", i)), HTTPAddr: FreeAddr(tb)}
	if err := os.MkdirAll(w.DataDir, 0o755); err != nil {
		tb.Fatal(err)
	}
	natsURL := cfg.NATSURL
	if viaProxy && natsURL != "" {
		first := natsURL
		if k := strings.IndexByte(natsURL, ','); k >= 0 {
			first = natsURL[:k]
		}
		w.NATSProxy = NewTCPProxy(tb, strings.TrimPrefix(first, "nats://"))
		natsURL = "nats://" + w.NATSProxy.Addr()
	}
	w.Process = NewProcess(tb, fmt.Sprintf("worker-%d", i), bin, filepath.Join(dir, fmt.Sprintf("worker-%d.log", i)),
		cfg.environ(w.DataDir, w.HTTPAddr, natsURL), "worker")
	if err := w.Start(); err != nil {
		tb.Fatal(err)
	}
	return w
}

// Restart starts the worker again after it stopped, with the same settings.
func (w *Worker) Restart(tb testing.TB) {
	tb.Helper()
	if err := w.Start(); err != nil {
		tb.Fatal(err)
	}
}

// Terminate sends SIGTERM without waiting.
func (w *Worker) Terminate() { w.Signal(syscall.SIGTERM) }

// Page is what the worker's HTTP address answers at path ("" on error).
func (w *Worker) Page(path string) (int, string) {
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + w.HTTPAddr + path)
	if err != nil {
		return 0, ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// Ready reports whether /readyz answers 200.
func (w *Worker) Ready() bool {
	c := http.Client{Timeout: time.Second}
	resp, err := c.Get("http://" + w.HTTPAddr + "/readyz")
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}
