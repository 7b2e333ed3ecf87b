package worker_test

import (
	"bufio"
	"context"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/xygroup/xygroup/worker"
)

// One client holding every connection it can (each idle after one request)
// keeps at most its own share of the server: its connections beyond it are
// closed at once, and the kubelet's probe, from another address, is answered.
func TestHealthProbeAnsweredWhileAClientHoldsConnections(t *testing.T) {
	hs, err := worker.StartHealthServer("127.0.0.1:0", worker.NewMetrics(), nil,
		worker.WithAllowedHosts(worker.NewHostAllowList(nil)),
		worker.WithHTTPLimits(worker.HTTPLimits{MaxConns: 4, MaxConnsPerClient: 2, IdleTimeout: 10 * time.Minute}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = hs.Close(context.Background()) })
	other := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}, Timeout: 5 * time.Second}
	answered := 0
	for range 6 {
		c, err := other.Dial("tcp", hs.Addr())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		if _, err := c.Write([]byte("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")); err != nil {
			continue
		}
		// A connection closed at once answers nothing; an accepted one
		// answers, then idles.
		_ = c.SetReadDeadline(time.Now().Add(20 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			continue
		}
		resp.Body.Close()
		answered++
	}
	if answered > 2 {
		t.Errorf("one client holds %d connections, want at most 2", answered)
	}
	client := &http.Client{Timeout: 20 * time.Second}
	resp, err := client.Get("http://" + hs.Addr() + "/healthz")
	if err != nil {
		t.Fatalf("/healthz while another client holds its connections: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/healthz: %s", resp.Status)
	}
}
