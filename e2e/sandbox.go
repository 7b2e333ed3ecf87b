package e2e

import (
	"context"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/xygroup/xygroup/xylink/sandbox"
)

// Tenant credentials the suite gives the sandbox and the workers. They are long
// and distinctive so that a leak into a log is found by a plain search.
const (
	Enterprise   = "e2e-enterprise"
	Token        = "e2e-token-7f3c9a1d5b2e4f60a8c1"
	ClientID     = "e2e-client"
	ClientSecret = "e2e-client-secret-4d2b8e6f1a3c5079"
)

// Sandbox is the XYLink sandbox served on loopback in the test process.
type Sandbox struct {
	*sandbox.Sandbox
	URL string
}

// StartSandbox serves a sandbox; Enterprise (1.0 and 2.0 credentials) is added
// unless cfg names it already.
func StartSandbox(tb testing.TB, cfg sandbox.Config) *Sandbox {
	tb.Helper()
	found := false
	for _, e := range cfg.Enterprises {
		found = found || e.ID == Enterprise
	}
	if !found {
		cfg.Enterprises = append(cfg.Enterprises, sandbox.Enterprise{ID: Enterprise, Token: Token, ClientID: ClientID, ClientSecret: ClientSecret})
	}
	sb := sandbox.New(cfg)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	srv := &http.Server{Handler: sb.Handler(), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if srv.Shutdown(ctx) != nil {
			_ = srv.Close()
		}
	})
	return &Sandbox{Sandbox: sb, URL: "http://" + ln.Addr().String()}
}

// DynamicGroupArrivals are the arrival times of dynamicGroup requests at the
// sandbox, by enterprise.
func (s *Sandbox) DynamicGroupArrivals() map[string][]time.Time {
	out := map[string][]time.Time{}
	for _, r := range s.Requests() {
		if r.Endpoint == "dynamicGroup" {
			out[r.EnterpriseID] = append(out[r.EnterpriseID], r.At)
		}
	}
	return out
}
