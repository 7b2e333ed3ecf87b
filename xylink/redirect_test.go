package xylink_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/xygroup/xygroup/xylink"
	"github.com/xygroup/xygroup/xylink/sandbox"
)

// Guarantee 3 (the API never receives more requests than grants) and the
// promise of BeforeEachRequest (client.go: "a rate-limit grant taken in gate is
// this request's alone").
//
// The client's http.Client follows redirects (no CheckRedirect): a 307 or 308
// from the API host makes net/http send the signed POST again, body and
// signature included, without the gate being called. Every call behind such a
// redirect (a gateway moving a path, a host canonicalising its URLs) is two
// requests at the API host on one grant: at the configured rate the host
// receives twice the rate.
func TestRedirectsAreNotFollowed(t *testing.T) {
	sb := startSandbox(t, sandbox.Config{Rate: 1e6})
	target, _ := url.Parse(sb.URL)
	rp := httputil.NewSingleHostReverseProxy(target)
	var arrived atomic.Int64
	gw := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, xylink.DynamicGroupPath) {
			arrived.Add(1)
		}
		if rest, moved := strings.CutPrefix(r.URL.Path, "/old"); moved {
			u := *r.URL
			u.Path = rest
			http.Redirect(w, r, u.String(), http.StatusTemporaryRedirect)
			return
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(gw.Close)

	c, err := xylink.NewClient(gw.URL+"/old", xylink.WithTenants(xylink.Credentials{EnterpriseID: ent1, Token: token1}))
	if err != nil {
		t.Fatal(err)
	}
	var grants atomic.Int64
	gate := xylink.BeforeEachRequest(func(context.Context) error { grants.Add(1); return nil })
	const n = 20
	two := 2
	for i := range n {
		req := &xylink.CreateGroupsRequest{MeetingRoomNumber: fmt.Sprintf("9100000001%02d", i), Mode: "random", GroupCount: &two}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err := c.CreateGroups(ctx, ent1, req, gate)
		cancel()
		if err == nil || !strings.Contains(err.Error(), "HTTP 307") || strings.Contains(err.Error(), "signature") {
			t.Fatalf("call %d: %v, want an error that names the redirect and not the signed location", i, err)
		}
		if o := xylink.Classify(err); o.Unknown || o.Disposition != xylink.Retry {
			t.Fatalf("call %d: a redirect classified %+v, want a retry with a known outcome", i, o)
		}
	}
	t.Logf("%d calls, %d grants taken, %d dynamicGroup requests arrived at the API host", n, grants.Load(), arrived.Load())
	if arrived.Load() > grants.Load() {
		t.Fatalf("%d requests at the API host on %d grants: a redirect is followed without a grant", arrived.Load(), grants.Load())
	}
}
