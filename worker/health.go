package worker

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/net/netutil"
)

// Check is one readiness condition; nil means ready.
type Check func() error

// HealthServer serves /metrics, /healthz (the process is alive) and /readyz (every
// check passes: NATS connected, streams ready, credentials accepted).
type HealthServer struct {
	srv  *http.Server
	ln   net.Listener
	done chan error
}

// HTTPLimits bound what one client can hold of the HTTP server: its time
// (reading a request, writing an answer, idling between requests), the size
// of its headers, and the connections of all clients together, which share
// the process's file descriptors with NATS and XYLink.
type HTTPLimits struct {
	ReadHeaderTimeout time.Duration
	// ReadTimeout bounds reading a whole request, its body included.
	ReadTimeout time.Duration
	// WriteTimeout bounds a request from its headers to the end of its answer
	// (a handler that needs longer extends its own).
	WriteTimeout   time.Duration
	IdleTimeout    time.Duration
	MaxHeaderBytes int
	// MaxConns: connections beyond it wait to be accepted.
	MaxConns int
	// MaxConnsPerClient: a client's connections beyond it are closed at
	// once, so that no one client holds MaxConns.
	MaxConnsPerClient int
}

// DefaultHTTPLimits are the limits of a field left zero.
var DefaultHTTPLimits = HTTPLimits{ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 15 * time.Second, WriteTimeout: 30 * time.Second,
	IdleTimeout: 30 * time.Second, MaxHeaderBytes: 32 << 10, MaxConns: 256, MaxConnsPerClient: 16}

type healthConfig struct {
	mux    *http.ServeMux
	limits HTTPLimits
	hosts  *HostAllowList
}

// HealthOption adds to what the health server serves, or sets how.
type HealthOption func(*healthConfig)

// WithPage serves page (the status page) at "/" and every path the health
// server does not serve itself.
func WithPage(page http.Handler) HealthOption {
	return func(c *healthConfig) { c.mux.Handle("/", page) }
}

// WithAllowedHosts refuses (421) every request but the health probes whose
// Host hosts does not allow: the kubelet's probes come by the pod's address,
// and answer nothing an attacker could use.
func WithAllowedHosts(hosts *HostAllowList) HealthOption {
	return func(c *healthConfig) { c.hosts = hosts }
}

// WithHTTPLimits sets the server's limits; a field left zero keeps its
// default (DefaultHTTPLimits).
func WithHTTPLimits(l HTTPLimits) HealthOption {
	return func(c *healthConfig) {
		d := &c.limits
		for _, f := range []struct{ to, from *time.Duration }{{&d.ReadHeaderTimeout, &l.ReadHeaderTimeout},
			{&d.ReadTimeout, &l.ReadTimeout}, {&d.WriteTimeout, &l.WriteTimeout}, {&d.IdleTimeout, &l.IdleTimeout}} {
			if *f.from > 0 {
				*f.to = *f.from
			}
		}
		if l.MaxHeaderBytes > 0 {
			d.MaxHeaderBytes = l.MaxHeaderBytes
		}
		if l.MaxConns > 0 {
			d.MaxConns = l.MaxConns
		}
		if l.MaxConnsPerClient > 0 {
			d.MaxConnsPerClient = l.MaxConnsPerClient
		}
	}
}

// StartHealthServer listens on addr and serves until Close.
func StartHealthServer(addr string, m *Metrics, checks map[string]Check, opts ...HealthOption) (*HealthServer, error) {
	mux := http.NewServeMux()
	cfg := &healthConfig{mux: mux, limits: DefaultHTTPLimits}
	for _, o := range opts {
		o(cfg)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	ln = netutil.LimitListener(limitPerClient(ln, min(cfg.limits.MaxConnsPerClient, cfg.limits.MaxConns)), cfg.limits.MaxConns)
	mux.Handle("GET /metrics", promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		status, report := http.StatusOK, map[string]string{}
		for name, c := range checks {
			if err := c(); err != nil {
				status = http.StatusServiceUnavailable
				report[name] = err.Error()
			} else {
				report[name] = "ok"
			}
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_ = json.NewEncoder(w).Encode(report)
	})
	var handler http.Handler = mux
	if cfg.hosts != nil {
		handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path != "/healthz" && r.URL.Path != "/readyz" && !cfg.hosts.Allows(r.Host) {
				cfg.hosts.Refuse(w)
				return
			}
			mux.ServeHTTP(w, r)
		})
	}
	l := cfg.limits
	h := &HealthServer{srv: &http.Server{Handler: handler, ReadHeaderTimeout: l.ReadHeaderTimeout, ReadTimeout: l.ReadTimeout,
		WriteTimeout: l.WriteTimeout, IdleTimeout: l.IdleTimeout, MaxHeaderBytes: l.MaxHeaderBytes}, ln: ln, done: make(chan error, 1)}
	go func() {
		err := h.srv.Serve(ln)
		if errors.Is(err, http.ErrServerClosed) {
			err = nil
		}
		h.done <- err
	}()
	return h, nil
}

// Addr is where the server listens.
func (h *HealthServer) Addr() string { return h.ln.Addr().String() }

// Close stops the server.
func (h *HealthServer) Close(ctx context.Context) error {
	err := h.srv.Shutdown(ctx)
	if serr := <-h.done; serr != nil && err == nil {
		err = serr
	}
	return err
}
