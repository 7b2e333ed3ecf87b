package xylink_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/xygroup/xygroup/xylink"
	"github.com/xygroup/xygroup/xylink/sandbox"
)

// Traced, the client sends the same requests (signatures accepted, no trace
// headers added, redirects still refused, a timed-out request still known as
// sent), and its spans hold no query, token, signature or secret.
func TestTracedRequestsKeepSecretsOut(t *testing.T) {
	sb := startSandbox(t, sandbox.Config{Rate: 1e6})
	target, _ := url.Parse(sb.URL)
	rp := httputil.NewSingleHostReverseProxy(target)
	var mu sync.Mutex
	var traceHeaders []string
	gw := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		for k := range r.Header {
			if k == "Traceparent" || k == "Tracestate" || k == "Baggage" {
				traceHeaders = append(traceHeaders, k)
			}
		}
		mu.Unlock()
		if strings.HasPrefix(r.URL.Path, "/old/") {
			http.Redirect(w, r, strings.TrimPrefix(r.URL.String(), "/old"), http.StatusTemporaryRedirect)
			return
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(gw.Close)

	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	ctx, parent := tp.Tracer("test").Start(context.Background(), "parent")
	c := newClient(t, gw.URL, xylink.WithTracerProvider(tp))
	for _, ent := range []string{ent1, ent2} {
		if _, err := c.CreateGroups(ctx, ent, manual("traced-"+ent)); err != nil {
			t.Fatalf("%s: %v", ent, err)
		}
	}
	old := newClient(t, gw.URL+"/old", xylink.WithTracerProvider(tp))
	if _, err := old.CreateGroups(ctx, ent1, manual("traced-redirect")); err == nil || !strings.Contains(err.Error(), "HTTP 307") {
		t.Fatalf("behind a redirect: %v, want the redirect refused", err)
	}
	sb.SetFaults(sandbox.Faults{Latency: sandbox.Duration(time.Second)})
	slow := newClient(t, gw.URL, xylink.WithTracerProvider(tp), xylink.WithTimeout(200*time.Millisecond))
	var te *xylink.TransportError
	if _, err := slow.CreateGroups(ctx, ent1, manual("traced-slow")); !errors.As(err, &te) || !te.Sent {
		t.Fatalf("timed out: %T %v, want a TransportError that says the request was sent", err, err)
	}
	parent.End()

	mu.Lock()
	if len(traceHeaders) > 0 {
		t.Errorf("trace headers sent to the API: %v", traceHeaders)
	}
	mu.Unlock()
	var names []string
	calls := 0
	for _, s := range rec.Ended() {
		if s.Name() == "parent" {
			continue
		}
		names = append(names, s.Name())
		if s.SpanKind() != trace.SpanKindClient || s.Parent().SpanID() != parent.SpanContext().SpanID() {
			t.Errorf("span %q: kind %v, parent %v; want a client span under the caller's", s.Name(), s.SpanKind(), s.Parent().SpanID())
		}
		if strings.HasSuffix(s.Name(), xylink.DynamicGroupPath) {
			calls++
		}
		text := s.Name()
		for _, a := range s.Attributes() {
			text += " " + string(a.Key) + "=" + a.Value.Emit()
		}
		for _, ev := range s.Events() {
			text += " " + ev.Name
		}
		text += " " + s.Status().Description
		for _, secret := range []string{"?", "signature", token1, secr2, "Bearer"} {
			if strings.Contains(text, secret) {
				t.Errorf("span holds %q: %s", secret, text)
			}
		}
	}
	if calls != 4 || len(names) != 5 {
		t.Errorf("spans %v: want four dynamicGroup requests and one app-token fetch", names)
	}
}
