package sandbox_test

import (
	"context"
	"net/http"
	"testing"

	"github.com/xygroup/xygroup/xylink/sandbox"
)

// A web page of another origin cannot drive the sandbox through a developer's
// browser: its POST carries an Origin (or Sec-Fetch-Site: cross-site) and is
// refused; the same request from curl or a test (no Origin) or from the
// sandbox's own origin is served.
func TestAdminRefusesOtherOrigins(t *testing.T) {
	sb, err := sandbox.Start(sandbox.Config{Enterprises: []sandbox.Enterprise{{ID: "e1", Token: "t1"}}}, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer sb.Close(context.Background())
	cases := []struct {
		name   string
		header map[string]string
		want   int
	}{
		{"no origin (curl, tests)", nil, http.StatusNoContent},
		{"the sandbox's own origin", map[string]string{"Origin": sb.URL}, http.StatusNoContent},
		{"another origin", map[string]string{"Origin": "https://evil.example"}, http.StatusForbidden},
		{"a cross-site fetch", map[string]string{"Sec-Fetch-Site": "cross-site"}, http.StatusForbidden},
		{"an opaque origin", map[string]string{"Origin": "null"}, http.StatusForbidden},
	}
	for _, tc := range cases {
		req, _ := http.NewRequest("POST", sb.URL+"/sandbox/reset", nil)
		for k, v := range tc.header {
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.want {
			t.Errorf("%s: HTTP %d, want %d", tc.name, resp.StatusCode, tc.want)
		}
	}
}
