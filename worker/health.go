package worker

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
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

// HealthOption adds to what the health server serves.
type HealthOption func(*http.ServeMux)

// WithPage serves page (the status page) at "/" and every path the health
// server does not serve itself.
func WithPage(page http.Handler) HealthOption {
	return func(mux *http.ServeMux) { mux.Handle("/", page) }
}

// StartHealthServer listens on addr and serves until Close.
func StartHealthServer(addr string, m *Metrics, checks map[string]Check, opts ...HealthOption) (*HealthServer, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	for _, o := range opts {
		o(mux)
	}
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
	h := &HealthServer{srv: &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}, ln: ln, done: make(chan error, 1)}
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
