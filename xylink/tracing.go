package xylink

import (
	"context"
	"net/http"

	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// WithTracerProvider gives each HTTP request (API calls and app-token
// fetches) a client span under the caller's span. The spans name the method,
// host and path only: the query, which carries the request's signature, never
// reaches them, nor do headers or bodies (tokens, secrets). The request itself
// is sent as without tracing: no trace context is added to it, since XYLink
// takes no part in the trace and its requests are signed.
func WithTracerProvider(tp trace.TracerProvider) Option { return func(c *Client) { c.tp = tp } }

// traced wraps base so that otelhttp sees each request without its query,
// and base gets it back.
func traced(base http.RoundTripper, tp trace.TracerProvider) http.RoundTripper {
	if base == nil {
		base = http.DefaultTransport
	}
	return hideQuery{otelhttp.NewTransport(restoreQuery{base},
		otelhttp.WithTracerProvider(tp),
		otelhttp.WithPropagators(propagation.NewCompositeTextMapPropagator()),
		otelhttp.WithSpanNameFormatter(func(_ string, r *http.Request) string { return r.Method + " " + r.URL.Path }),
	)}
}

type hiddenQuery struct{}

// hideQuery hands the next transport the request without its query, kept in
// the request's context for restoreQuery.
type hideQuery struct{ next http.RoundTripper }

func (h hideQuery) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.URL.RawQuery == "" {
		return h.next.RoundTrip(r)
	}
	q := r.URL.RawQuery
	r = r.Clone(context.WithValue(r.Context(), hiddenQuery{}, q)) // the caller's request stays as it is
	r.URL.RawQuery = ""
	return h.next.RoundTrip(r)
}

// restoreQuery puts back the query hideQuery took off.
type restoreQuery struct{ base http.RoundTripper }

func (t restoreQuery) RoundTrip(r *http.Request) (*http.Response, error) {
	q, ok := r.Context().Value(hiddenQuery{}).(string)
	if !ok {
		return t.base.RoundTrip(r)
	}
	r = r.Clone(r.Context())
	r.URL.RawQuery = q
	return t.base.RoundTrip(r)
}
