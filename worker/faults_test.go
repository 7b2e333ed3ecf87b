package worker_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/xygroup/xygroup/worker"
	"github.com/xygroup/xygroup/xylink"
)

// faultProxy serves a reverse proxy to the sandbox at target, standing for a
// gateway in front of the API. before runs when a request arrives (it may
// delay it); after runs once the sandbox answered and may replace its answer,
// as a gateway does when it gives up on an upstream that acted.
type faultProxy struct {
	before func(r *http.Request)
	after  func(r *http.Request) (status int, replace bool)
}

func (f faultProxy) start(t *testing.T, target string) string {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	rp := httputil.NewSingleHostReverseProxy(u)
	rp.ModifyResponse = func(resp *http.Response) error {
		if f.after == nil {
			return nil
		}
		status, replace := f.after(resp.Request)
		if !replace {
			return nil
		}
		// The upstream acted and answered; the gateway answers something else.
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		page := "<html><body><h1>" + http.StatusText(status) + "</h1></body></html>"
		resp.StatusCode, resp.Status = status, http.StatusText(status)
		resp.Header = http.Header{"Content-Type": {"text/html"}}
		resp.Body = io.NopCloser(strings.NewReader(page))
		resp.ContentLength = int64(len(page))
		return nil
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if f.before != nil {
			f.before(r)
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

func isDynamicGroup(r *http.Request) bool {
	return strings.HasSuffix(r.URL.Path, xylink.DynamicGroupPath)
}

func isTokenEndpoint(r *http.Request) bool {
	return r.URL.Path == xylink.AppTokenPath || r.URL.Path == xylink.RefreshTokenPath
}

// breakerOpens counts how often any tenant's shared breaker opened.
func breakerOpens(t *testing.T, js jetstream.JetStream) int {
	t.Helper()
	kv, err := js.KeyValue(context.Background(), worker.BucketBreakers)
	if err != nil {
		t.Fatal(err)
	}
	keys, err := kv.ListKeys(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	opens := 0
	for k := range keys.Keys() {
		e, err := kv.Get(context.Background(), k)
		if err != nil {
			t.Fatal(err)
		}
		var r struct {
			Opens int `json:"opens"`
		}
		if err := json.Unmarshal(e.Value(), &r); err != nil {
			t.Fatal(err)
		}
		opens += r.Opens
	}
	return opens
}
