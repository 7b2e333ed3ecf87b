package xylink_test

import (
	"bytes"
	"strings"
	"testing"

	"github.com/rs/zerolog"

	"github.com/xygroup/xygroup/xylink"
)

// A plain-http base URL that leaves the machine is accepted with a warning (the
// tokens and signatures would cross the network unencrypted); loopback (the
// sandbox) and https are not warned about.
func TestPlainHTTPBaseURLWarns(t *testing.T) {
	for _, tc := range []struct {
		url  string
		warn bool
	}{
		{"http://api.example.com", true},
		{"http://10.0.0.7:8080/xylink", true},
		{"http://127.0.0.1:8090", false},
		{"http://localhost:8090", false},
		{"https://sdk.xylink.com", false},
	} {
		var buf bytes.Buffer
		if _, err := xylink.NewClient(tc.url, xylink.WithLogger(zerolog.New(&buf))); err != nil {
			t.Fatal(err)
		}
		if got := strings.Contains(buf.String(), "plain http"); got != tc.warn {
			t.Errorf("%s: warned %v, want %v (%s)", tc.url, got, tc.warn, buf.String())
		}
	}
}
