package statuspage_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/xygroup/xygroup/worker"
	"github.com/xygroup/xygroup/worker/contract"
	"github.com/xygroup/xygroup/worker/record"
	"github.com/xygroup/xygroup/worker/statuspage"
	wt "github.com/xygroup/xygroup/worker/workertest"
	"github.com/xygroup/xygroup/xylink/sandbox"
)

// Sixteen views at once of commands whose events are far back in a stream
// of many: each reads the command's record and its terminal event by the
// sequence the record names (or the event the record holds), never a scan,
// and views of one command share one reading.
func TestCommandViewsCostBoundedJetStreamCalls(t *testing.T) {
	sb := wt.StartSandbox(t, sandbox.Config{Rate: 100000, Faults: sandbox.Faults{Fail: &sandbox.FixedAnswer{Status: 400, ErrorCode: 60001, UserMessage: "bad"}}})
	ns := wt.StartNATS(t)
	nc := wt.Connect(t, ns)
	js := wt.JetStream(t, nc)
	w := wt.StartWorkerOn(t, nc, wt.Client(t, sb))
	page, err := statuspage.New(statuspage.Options{JS: js, Inspector: w.Worker, DefaultEnterprise: wt.Enterprise})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(page)
	defer srv.Close()
	ctx := context.Background()

	const cmds = 8
	for i := range cmds {
		wt.Publish(t, js, "", wt.Command(fmt.Sprintf("view-%d", i), "9600001"))
	}
	wt.Eventually(t, 30*time.Second, func() bool { return wt.TerminalCount(t, js) == cmds }, "every command failed")
	// Their events are followed by many others: a search for them reads them all.
	const later = 600
	for i := range later {
		if _, err := js.Publish(ctx, contract.SubjectCreated, fmt.Appendf(nil, `{"commandId":"other-%d","enterpriseId":%q}`, i, wt.Enterprise)); err != nil {
			t.Fatal(err)
		}
	}
	// Records naming their event's sequence: view-0 … view-3 name their own,
	// view-4 one that is not its own (the page shows the record's copy); the
	// others name none (records written before the sequence was kept).
	seqs := terminalSeqs(t, js)
	kv, err := js.KeyValue(ctx, record.Bucket)
	if err != nil {
		t.Fatal(err)
	}
	for i := range cmds {
		seq := seqs[fmt.Sprintf("view-%d", i)]
		if i == 4 {
			seq = seqs["view-0"]
		}
		key := record.Key(wt.Enterprise, fmt.Sprintf("view-%d", i))
		e, err := kv.Get(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		var r map[string]json.RawMessage
		if err := json.Unmarshal(e.Value(), &r); err != nil {
			t.Fatal(err)
		}
		r["eventSeq"] = json.RawMessage(fmt.Sprint(seq))
		if i > 4 {
			delete(r, "eventSeq")
		}
		b, _ := json.Marshal(r)
		if _, err := kv.Update(ctx, key, b, e.Revision()); err != nil {
			t.Fatal(err)
		}
	}

	// Every JetStream API request, counted as the server receives it.
	var calls atomic.Int64
	sub, err := nc.Subscribe("$JS.API.>", func(*nats.Msg) { calls.Add(1) })
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	// Eight views of one command and eight of the others, at once.
	paths := make([]string, 0, 16)
	for range 8 {
		paths = append(paths, "/commands/view-0")
	}
	for i := 1; i < cmds; i++ {
		paths = append(paths, fmt.Sprintf("/commands/view-%d", i))
	}
	paths = append(paths, "/commands/no-such-command")
	var mu sync.Mutex
	codes := map[int]int{}
	var wg sync.WaitGroup
	for _, p := range paths {
		wg.Go(func() {
			status, body := fetch(t, http.MethodGet, srv.URL+p, nil)
			mu.Lock()
			defer mu.Unlock()
			codes[status]++
			if status == http.StatusOK && !strings.Contains(body, `<article class="event">`) {
				t.Errorf("%s: 200 without its terminal event", p)
			}
		})
	}
	wg.Wait()
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	// At most five requests per reading (the bucket, the record, its legacy
	// key, the events stream, the event), one reading per command.
	n := calls.Load()
	t.Logf("16 views at once: answers %v, %d JetStream API requests (%d events stored)", codes, n, cmds+later)
	if bound := int64(5 * (cmds + 1)); n > bound {
		t.Errorf("16 views cost %d JetStream API requests, want at most %d", n, bound)
	}
	if codes[http.StatusOK]+codes[http.StatusNotFound]+codes[http.StatusTooManyRequests] != len(paths) || codes[http.StatusOK] == 0 {
		t.Errorf("answers %v: each view is shown, not found, or refused at once (429)", codes)
	}

	// What each view shows.
	for i := range cmds {
		var status int
		var body string
		wt.Eventually(t, 10*time.Second, func() bool {
			status, body = fetch(t, http.MethodGet, srv.URL+fmt.Sprintf("/commands/view-%d", i), nil)
			return status != http.StatusTooManyRequests
		}, "a view not refused")
		want := fmt.Sprintf("stream sequence %d", seqs[fmt.Sprintf("view-%d", i)])
		if i >= 4 {
			want = "as the command's record holds it"
		}
		if status != http.StatusOK || !strings.Contains(body, want) || !strings.Contains(body, fmt.Sprintf("view-%d", i)) {
			t.Errorf("view-%d: %d, want %q in:\n%s", i, status, want, body)
		}
	}
}

// terminalSeqs: each command's terminal event's sequence in the events stream.
func terminalSeqs(t *testing.T, js jetstream.JetStream) map[string]uint64 {
	t.Helper()
	ctx := context.Background()
	s, err := js.Stream(ctx, contract.StreamEvents)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]uint64{}
	for seq := uint64(1); ; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		if contract.IsTerminal(m.Subject) {
			out[contract.IdentityOf(m.Data).CommandID] = seq
		}
	}
}

// Every attempt at the token costs, right or wrong, and each client has its
// own budget: after 15 wrong tokens from one address the right one is
// refused for a while; another address is not refused.
func TestReplayTokenLimiterPerClient(t *testing.T) {
	sb := wt.StartSandbox(t, sandbox.Config{})
	ns := wt.StartNATS(t)
	nc := wt.Connect(t, ns)
	js := wt.JetStream(t, nc)
	wt.StartWorkerOn(t, nc, wt.Client(t, sb))
	wt.AwaitStream(t, js, contract.StreamEvents)
	page, err := statuspage.New(statuspage.Options{JS: js, DefaultEnterprise: wt.Enterprise, Token: uiToken})
	if err != nil {
		t.Fatal(err)
	}
	var clock atomic.Int64
	clock.Store(time.Now().UnixNano())
	statuspage.SetGuessClock(page, func() time.Time { return time.Unix(0, clock.Load()) })
	srv := httptest.NewServer(page)
	defer srv.Close()

	post := func(c *http.Client, token string) int {
		resp, err := c.PostForm(srv.URL+"/replay", url.Values{"token": {token}, "class": {"unavailable"}, "since": {"1h"}})
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	a := &http.Client{Timeout: 30 * time.Second}
	// Another address of the loopback network: another client.
	b := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{DialContext: (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}}).DialContext}}
	codes := map[int]int{}
	for i := range 15 {
		codes[post(a, fmt.Sprintf("wrong-%d", i))]++
	}
	t.Logf("15 wrong tokens: %v", codes)
	if codes[http.StatusForbidden]+codes[http.StatusTooManyRequests] != 15 {
		t.Errorf("15 wrong tokens answered %v, want 403 or 429 each", codes)
	}
	if got := post(a, uiToken); got != http.StatusTooManyRequests {
		t.Errorf("the right token after 15 wrong ones from the same client: %d, want 429", got)
	}
	if got := post(b, uiToken); got != http.StatusOK {
		t.Errorf("the right token from another client: %d, want 200", got)
	}
	clock.Add(int64(time.Minute))
	if got := post(a, uiToken); got != http.StatusOK {
		t.Errorf("the right token a minute later: %d, want 200", got)
	}
	// Right ones cost too.
	codes = map[int]int{}
	for range 15 {
		codes[post(b, uiToken)]++
	}
	if codes[http.StatusTooManyRequests] == 0 {
		t.Errorf("15 right tokens at once from one client: %v, want some refused", codes)
	}
}

// A Host that is not a loopback name, an IP address or a configured name
// (a name rebound to this address by an attacker's DNS) is refused on the
// page, a command's view, the replay and the metrics (their enterprise ids);
// the health probes answer whatever the Host, for the kubelet.
func TestRebindingHostRefused(t *testing.T) {
	ns := wt.StartNATS(t)
	nc := wt.Connect(t, ns)
	js := wt.JetStream(t, nc)
	sb := wt.StartSandbox(t, sandbox.Config{})
	w := wt.StartWorkerOn(t, nc, wt.Client(t, sb))
	wt.AwaitStream(t, js, contract.StreamEvents)
	page, err := statuspage.New(statuspage.Options{JS: js, Inspector: w.Worker, DefaultEnterprise: wt.Enterprise, Token: uiToken,
		AllowedHosts: []string{"Status.Example.Internal"}})
	if err != nil {
		t.Fatal(err)
	}
	hs, err := worker.StartHealthServer("127.0.0.1:0", w.Metrics(), w.Checks(), worker.WithPage(page),
		worker.WithAllowedHosts(worker.NewHostAllowList([]string{"Status.Example.Internal"})))
	if err != nil {
		t.Fatal(err)
	}
	defer hs.Close(context.Background())
	_, port, _ := net.SplitHostPort(hs.Addr())
	do := func(method, path, host string) int {
		var body io.Reader
		if method == http.MethodPost {
			body = strings.NewReader(url.Values{"token": {uiToken}, "class": {"rejected"}}.Encode())
		}
		req, _ := http.NewRequest(method, "http://"+hs.Addr()+path, body)
		req.Host = host
		if body != nil {
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	for _, host := range []string{"rebind.attacker.example", "rebind.attacker.example:" + port, "localhost.attacker.example", "127.0.0.1.nip.io:" + port} {
		for _, r := range [][2]string{{"GET", "/"}, {"GET", "/?part=live"}, {"GET", "/commands/x"}, {"GET", "/static/page.js"}, {"POST", "/replay"}, {"GET", "/metrics"}} {
			if got := do(r[0], r[1], host); got != http.StatusMisdirectedRequest {
				t.Errorf("%s %s with Host %s: %d, want 421", r[0], r[1], host, got)
			}
		}
		for _, p := range []string{"/healthz", "/readyz"} {
			if got := do("GET", p, host); got == http.StatusMisdirectedRequest || got == http.StatusNotFound {
				t.Errorf("GET %s with Host %s: %d, want it served", p, host, got)
			}
		}
	}
	for _, host := range []string{"localhost:" + port, "127.0.0.1:" + port, "[::1]:" + port, "10.1.2.3:9090", "status.example.internal", "STATUS.example.internal.:" + port, "localhost"} {
		for _, p := range []string{"/", "/metrics"} {
			if got := do("GET", p, host); got != http.StatusOK {
				t.Errorf("GET %s with Host %s: %d, want 200", p, host, got)
			}
		}
	}
}

// The HTTP server lets no client hold a connection: an idle keep-alive is
// closed, and a request whose body trickles in is cut off.
func TestSlowClientsCutOff(t *testing.T) {
	ns := wt.StartNATS(t)
	nc := wt.Connect(t, ns)
	js := wt.JetStream(t, nc)
	page, err := statuspage.New(statuspage.Options{JS: js, DefaultEnterprise: wt.Enterprise, Token: uiToken})
	if err != nil {
		t.Fatal(err)
	}
	m := worker.NewMetrics()
	hs, err := worker.StartHealthServer("127.0.0.1:0", m, nil, worker.WithPage(page),
		worker.WithHTTPLimits(worker.HTTPLimits{ReadTimeout: 500 * time.Millisecond, IdleTimeout: 500 * time.Millisecond}))
	if err != nil {
		t.Fatal(err)
	}
	defer hs.Close(context.Background())

	t.Run("idle keep-alive", func(t *testing.T) {
		conn, err := net.Dial("tcp", hs.Addr())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		fmt.Fprintf(conn, "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
		br := bufio.NewReader(conn)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.Close {
			t.Fatal("the server closed the connection after the answer: not a keep-alive")
		}
		awaitClosed(t, conn, br)
	})
	t.Run("trickled body", func(t *testing.T) {
		conn, err := net.Dial("tcp", hs.Addr())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		fmt.Fprintf(conn, "POST /replay HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 10000\r\n\r\ntoken=")
		stop := make(chan struct{})
		defer close(stop)
		go func() {
			tick := time.NewTicker(100 * time.Millisecond)
			defer tick.Stop()
			for {
				select {
				case <-stop:
					return
				case <-tick.C:
					if _, err := conn.Write([]byte("a")); err != nil {
						return
					}
				}
			}
		}()
		awaitClosed(t, conn, bufio.NewReader(conn))
	})
}

// awaitClosed reads until the server closes the connection; failing if it
// is still open after far longer than the server's limits.
func awaitClosed(t *testing.T, conn net.Conn, br *bufio.Reader) {
	t.Helper()
	start := time.Now()
	_ = conn.SetReadDeadline(time.Now().Add(60 * time.Second))
	_, err := io.Copy(io.Discard, br)
	var ne net.Error
	switch {
	case errors.As(err, &ne) && ne.Timeout():
		t.Fatalf("the connection is still open after %v", time.Since(start).Round(time.Second))
	case err != nil && !errors.Is(err, syscall.ECONNRESET) && !errors.Is(err, os.ErrDeadlineExceeded):
		t.Fatalf("read: %v", err)
	}
	t.Logf("closed by the server after %v", time.Since(start).Round(time.Millisecond))
}

// Connections beyond the cap wait to be accepted: two clients that hold
// theirs keep a third out until one lets go.
func TestConnectionCap(t *testing.T) {
	m := worker.NewMetrics()
	hs, err := worker.StartHealthServer("127.0.0.1:0", m, nil, worker.WithHTTPLimits(worker.HTTPLimits{MaxConns: 2, ReadHeaderTimeout: 5 * time.Minute}))
	if err != nil {
		t.Fatal(err)
	}
	defer hs.Close(context.Background())
	var held []net.Conn
	for range 2 {
		c, err := net.Dial("tcp", hs.Addr())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		held = append(held, c)
	}
	third, err := net.Dial("tcp", hs.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer third.Close()
	fmt.Fprintf(third, "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
	answered := make(chan error, 1)
	go func() {
		resp, err := http.ReadResponse(bufio.NewReader(third), nil)
		if err == nil {
			resp.Body.Close()
		}
		answered <- err
	}()
	select {
	case err := <-answered:
		t.Fatalf("a third connection was served while two were held (%v)", err)
	case <-time.After(300 * time.Millisecond):
	}
	held[0].Close()
	select {
	case err := <-answered:
		if err != nil {
			t.Fatalf("the third connection, once one let go: %v", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("the third connection was not served after one of the two let go")
	}
}
