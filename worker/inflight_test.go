package worker_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/xygroup/xygroup/worker"
	wt "github.com/xygroup/xygroup/worker/workertest"
	"github.com/xygroup/xygroup/xylink"
	"github.com/xygroup/xygroup/xylink/sandbox"
)

// stuckLimiter stands for a replica that waits for its rate-limit grant (the
// limiter is saturated) when it dies: it never grants, and says when a call is
// waiting.
type stuckLimiter struct{ entered chan string }

func (l *stuckLimiter) Wait(ctx context.Context, enterpriseID string, _ worker.Priority, _ ...worker.WaitOption) error {
	select {
	case l.entered <- enterpriseID:
	default:
	}
	<-ctx.Done()
	return ctx.Err()
}
func (l *stuckLimiter) Throttled(string) {}

// groupNameProxy is a gateway in front of the sandbox that records, in arrival
// order, the first groupName of every dynamicGroup request it forwards (the
// commands of these tests name their groups after themselves), and the status
// the sandbox answered.
type groupNameProxy struct {
	mu   sync.Mutex
	seen []string
}

func (p *groupNameProxy) start(t *testing.T, target string) string {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	rp := httputil.NewSingleHostReverseProxy(u)
	rp.ModifyResponse = func(resp *http.Response) error {
		if !strings.HasSuffix(resp.Request.URL.Path, xylink.DynamicGroupPath) {
			return nil
		}
		raw, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		resp.Body = io.NopCloser(bytes.NewReader(raw))
		name, _ := resp.Request.Context().Value(groupNameKey{}).(string)
		answer := fmt.Sprint(resp.StatusCode)
		if i := bytes.Index(raw, []byte(`"errorCode":`)); i >= 0 {
			answer += " " + string(raw[i+len(`"errorCode":`):min(len(raw), i+len(`"errorCode":`)+5)])
		}
		p.mu.Lock()
		p.seen = append(p.seen, name+" → "+answer)
		p.mu.Unlock()
		return nil
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, xylink.DynamicGroupPath) {
			body, _ := io.ReadAll(r.Body)
			r.Body = io.NopCloser(bytes.NewReader(body))
			name := ""
			if i := bytes.Index(body, []byte(`"groupName":"`)); i >= 0 {
				rest := body[i+len(`"groupName":"`):]
				if j := bytes.IndexByte(rest, '"'); j >= 0 {
					name = string(rest[:j])
				}
			}
			r = r.WithContext(context.WithValue(r.Context(), groupNameKey{}, name))
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

type groupNameKey struct{}

func (p *groupNameProxy) requests() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.seen...)
}

// namedCommand is a valid manual command whose one group is named after it.
func namedCommand(id, meeting string) []byte {
	return []byte(fmt.Sprintf(`{"commandId":%q,"meetingRoomNumber":%q,"mode":"manual","groupList":[{"groupName":%q,"memberList":[{"id":101990441,"type":5,"participantNumber":"18961782725"}]}]}`,
		id, meeting, id))
}

// A replica that dies while its call waits for a rate-limit grant sent
// nothing: when the command comes back, its attempt is given back, not marked
// "maybe created". Here another command of the same meeting opens the groups
// meanwhile, so the command's one request is answered 66684: it must end
// failed.already_open, not be reconciled as created.
func TestCallAbandonedInGrantWaitIsNotReconciled(t *testing.T) {
	srv := wt.StartNATS(t)
	sb := wt.StartSandbox(t, sandbox.Config{Rate: 1e6})
	var proxy groupNameProxy
	base := proxy.start(t, sb.URL)
	c, err := xylink.NewClient(base, xylink.WithTenants(xylink.Credentials{EnterpriseID: wt.Enterprise, Token: wt.Token}))
	if err != nil {
		t.Fatal(err)
	}
	streams := worker.WithStreams(worker.StreamSettings{AckWait: 2 * time.Second})
	lease := worker.WithCallLease(3 * time.Second)

	// Replica 1 takes command A and waits for a grant that does not come.
	stuck := &stuckLimiter{entered: make(chan string, 1)}
	nc1 := wt.Connect(t, srv)
	wt.StartWorkerOn(t, nc1, c, worker.WithLimiter(stuck), streams, lease, worker.WithConcurrency(1))
	js := wt.JetStream(t, wt.Connect(t, srv))
	wt.AwaitStream(t, js, worker.StreamCommands)
	wt.Publish(t, js, "cmd-A", namedCommand("cmd-A", "910000000001"))
	select {
	case <-stuck.entered:
	case <-time.After(30 * time.Second):
		t.Fatal("replica 1 never waited for a grant")
	}
	// It dies (its connection is gone: nothing it does any more reaches NATS).
	nc1.Close()

	// Command B of the same meeting is published and created by replica 2.
	wt.Publish(t, js, "cmd-B", namedCommand("cmd-B", "910000000001"))
	wt.StartWorker(t, srv, c, streams, lease)

	events := wt.AwaitTerminal(t, js, 2, 90*time.Second)
	reqs := proxy.requests()
	sentA := 0
	for _, r := range reqs {
		if strings.HasPrefix(r, "cmd-A ") {
			sentA++
		}
	}
	a := events["cmd-A"]
	t.Logf("API requests in arrival order: %v", reqs)
	t.Logf("cmd-A events: %s %s", a[0].Subject, a[0].Data)
	if sentA == 1 && a[0].Subject == worker.SubjectCreated {
		t.Fatalf("command cmd-A reconciled as created though its only request (%d to the API) was answered 66684: "+
			"the groups are cmd-B's; the dead replica never sent cmd-A", sentA)
	}
}

// breakerRecordOf reads the only tenant's record of the breakers bucket.
func breakerRecordOf(t *testing.T, js jetstream.JetStream) (r struct {
	State        string    `json:"state"`
	OpenUntil    time.Time `json:"openUntil"`
	ProbingUntil time.Time `json:"probingUntil"`
	Opens        int       `json:"opens"`
}) {
	t.Helper()
	kv, err := js.KeyValue(context.Background(), worker.BucketBreakers)
	if err != nil {
		return r
	}
	keys, err := kv.Keys(context.Background())
	if err != nil || len(keys) != 1 {
		return r
	}
	e, err := kv.Get(context.Background(), keys[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(e.Value(), &r); err != nil {
		t.Fatal(err)
	}
	return r
}

// The replica holding the cluster's one half-open probe of an open tenant is
// stopped while the probe's call is in flight and the drain timeout cuts it:
// the cut call says nothing about XYLink, and the claim is given back at once,
// so another replica probes after OpenFor, not after the claim's minute.
func TestStoppedBreakerProbeGivesItsClaimBack(t *testing.T) {
	srv := wt.StartNATS(t)
	sb := wt.StartSandbox(t, sandbox.Config{Rate: 1e6})
	c := wt.Client(t, sb)
	sb.AddOutage(sandbox.Outage{From: time.Now().Add(-time.Second), Until: time.Now().Add(time.Hour)})
	opts := []worker.Option{worker.WithDrainTimeout(300 * time.Millisecond),
		worker.WithBreakerSettings(worker.BreakerSettings{ConsecutiveFailures: 2, OpenFor: time.Second})}
	first := wt.StartWorker(t, srv, c, opts...)
	js := wt.JetStream(t, wt.Connect(t, srv))
	wt.AwaitStream(t, js, worker.StreamCommands)
	const n = 4
	for i := range n {
		id := fmt.Sprintf("held-%d", i)
		wt.Publish(t, js, id, wt.Command(id, "m-"+id))
	}
	wt.Eventually(t, time.Minute, func() bool { return breakerRecordOf(t, js).State == "open" }, "the breaker open")
	// The API is back but slow: the next half-open probe's call takes 4 s.
	sb.ClearOutages()
	sb.SetFaults(sandbox.Faults{Latency: sandbox.Duration(4 * time.Second)})
	wt.Eventually(t, time.Minute, func() bool { return breakerRecordOf(t, js).ProbingUntil.After(time.Now()) }, "a half-open probe claimed")
	awaitCallAtSandbox(t, sb) // the probe's call is at the sandbox, in its latency
	second := wt.StartWorker(t, srv, c, opts...)
	if err := first.Stop(); err != nil {
		t.Fatal(err)
	}
	sb.SetFaults(sandbox.Faults{})
	rec := breakerRecordOf(t, js)
	left := time.Until(rec.ProbingUntil)
	t.Logf("after the stop: breaker %s, open until %v ago, probe claim held for %.1f s more", rec.State,
		time.Since(rec.OpenUntil).Round(time.Millisecond), left.Seconds())
	// How long the other replica then waits before the tenant flows again.
	stopped := time.Now()
	for breakerRecordOf(t, js).State == "open" && time.Since(stopped) < 90*time.Second {
		time.Sleep(50 * time.Millisecond)
	}
	_ = second
	t.Logf("the tenant closed %.1f s after the stop (OpenFor 1 s)", time.Since(stopped).Seconds())
	if left > 0 {
		t.Fatalf("the stopped replica's half-open probe claim is still held for %.1f s: the tenant's commands wait for it", left.Seconds())
	}
}

// slowLimiter stands for a saturated cluster limiter: every grant comes after
// delay (within the gate's bound, the call lease). entered reports each wait.
type slowLimiter struct {
	delay   time.Duration
	entered chan time.Time
}

func (l *slowLimiter) Wait(ctx context.Context, _ string, _ worker.Priority, _ ...worker.WaitOption) error {
	select {
	case l.entered <- time.Now():
	default:
	}
	select {
	case <-time.After(l.delay):
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
func (l *slowLimiter) Throttled(string) {}

// Never two calls in flight for one command, and no success sent again: with
// signature 2.0 a call whose app token is refused is repeated after a new
// token and a second grant. Every request leaves at least a lease before the
// command's in-flight record expires (the token fetch and the second grant
// come out of the grant's time), so a second delivery of the command, waiting
// on that record, never calls while a request is out.
//
// Here: call lease 3 s (PendingUntil = begin + 6 s), client timeout 1 s (the
// lease is three times the timeout, as the defaults 30 s / 10 s), a token
// endpoint that answers in 0.8 s and grants that come after 2.7 s.
func TestRepeatAfterRefusedTokenStaysWithinItsRecord(t *testing.T) {
	const ent, clientID, secret = "ent-v2", "client-v2", "client-secret-v2-0123456789"
	const meeting = "910000000077"
	srv := wt.StartNATS(t)
	sb := wt.StartSandbox(t, sandbox.Config{Rate: 1e6,
		Enterprises: []sandbox.Enterprise{{ID: ent, ClientID: clientID, ClientSecret: secret}}})
	base := faultProxy{before: func(r *http.Request) {
		if isTokenEndpoint(r) {
			time.Sleep(800 * time.Millisecond)
		}
	}}.start(t, sb.URL)
	newClient := func() *xylink.Client {
		c, err := xylink.NewClient(base, xylink.WithTimeout(time.Second), xylink.WithTenants(xylink.Credentials{
			EnterpriseID: ent, ClientID: clientID, ClientSecret: secret, SignType: xylink.SignHMACSHA256}))
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	common := []worker.Option{worker.WithDefaultEnterprise(ent), worker.WithCallLease(3 * time.Second)}
	slow := &slowLimiter{delay: 2700 * time.Millisecond, entered: make(chan time.Time, 4)}
	wt.StartWorker(t, srv, newClient(), append(common, worker.WithLimiter(slow), worker.WithConcurrency(1))...)
	js := wt.JetStream(t, wt.Connect(t, srv))
	wt.AwaitStream(t, js, worker.StreamCommands)
	cmd := wt.Command("dup-1", meeting)
	wt.Publish(t, js, "dup-1", cmd)
	select {
	case <-slow.entered:
	case <-time.After(30 * time.Second):
		t.Fatal("no grant wait")
	}
	// The platform revokes the token the call holds: its request meets 401.
	sb.ExpireTokens()
	// A second replica, and the same command published again (without the
	// header: its commandId is its key).
	sb.SetFaults(sandbox.Faults{Latency: sandbox.Duration(600 * time.Millisecond)})
	wt.StartWorker(t, srv, newClient(), common...)
	wt.Publish(t, js, "", cmd)

	// Both deliveries settled: the command ended, and the second delivery
	// (busy while the first was in flight) has met its record.
	evs := wt.AwaitTerminal(t, js, 1, time.Minute)["dup-1"]
	wt.AwaitConsumerIdle(t, js, time.Minute)
	var sent []sandbox.Request
	for _, r := range sb.Requests() {
		if r.Endpoint == "dynamicGroup" && r.Meeting == meeting && r.Status != http.StatusUnauthorized {
			sent = append(sent, r)
		}
	}
	var lines []string
	for _, r := range sb.Requests() {
		if r.Endpoint == "dynamicGroup" {
			lines = append(lines, fmt.Sprintf("%s %d/%d", r.At.Format("15:04:05.000"), r.Status, r.ErrorCode))
		}
	}
	t.Logf("dynamicGroup requests (arrived at, status/errorCode): %v", lines)
	t.Logf("dup-1's events: %d, first %s %s", len(evs), evs[0].Subject, evs[0].Data)
	if len(sent) >= 2 {
		t.Fatalf("command dup-1 reached the API %d times (answers %d/%d then %d/%d): the repeat after a refused token left after "+
			"its PendingUntil, while the other replica had begun and created it", len(sent), sent[0].Status, sent[0].ErrorCode, sent[1].Status, sent[1].ErrorCode)
	}
}

// The same with the binary's settings (XYLINK_TIMEOUT 10 s, call lease 15 s,
// in flight for 30 s): a token endpoint that answers in 9 s, a grant after
// 14 s and a platform that answers in 9 s would put a request out after the
// record expired; the request is held back instead, and a second delivery of
// the command never calls while the first call is out.
func TestSlowTokenFetchStaysWithinItsRecord(t *testing.T) {
	const ent, clientID, secret = "ent-v2", "client-v2", "client-secret-v2-0123456789"
	const meeting = "910000000078"
	srv := wt.StartNATS(t)
	sb := wt.StartSandbox(t, sandbox.Config{Rate: 1e6, Faults: sandbox.Faults{Latency: sandbox.Duration(9 * time.Second)},
		Enterprises: []sandbox.Enterprise{{ID: ent, ClientID: clientID, ClientSecret: secret}}})
	base := faultProxy{before: func(r *http.Request) {
		if isTokenEndpoint(r) {
			time.Sleep(9 * time.Second)
		}
	}}.start(t, sb.URL)
	const timeout = 10 * time.Second // XYLINK_TIMEOUT's default
	c, err := xylink.NewClient(base, xylink.WithTimeout(timeout), xylink.WithTenants(xylink.Credentials{
		EnterpriseID: ent, ClientID: clientID, ClientSecret: secret, SignType: xylink.SignHMACSHA256}))
	if err != nil {
		t.Fatal(err)
	}
	common := []worker.Option{worker.WithDefaultEnterprise(ent), worker.WithCallLease(timeout + 5*time.Second)}
	slow := &slowLimiter{delay: 14 * time.Second, entered: make(chan time.Time, 4)}
	wt.StartWorker(t, srv, c, append(common, worker.WithLimiter(slow), worker.WithConcurrency(1))...)
	js := wt.JetStream(t, wt.Connect(t, srv))
	wt.AwaitStream(t, js, worker.StreamCommands)
	cmd := wt.Command("dup-2", meeting)
	wt.Publish(t, js, "dup-2", cmd)
	// A second replica, and the same command published again (its commandId is its key).
	wt.StartWorker(t, srv, c, common...)
	time.Sleep(time.Second)
	wt.Publish(t, js, "", cmd)

	evs := wt.AwaitTerminal(t, js, 1, 2*time.Minute)["dup-2"]
	wt.AwaitConsumerIdle(t, js, time.Minute) // both deliveries settled, every answer in
	var sent []sandbox.Request
	for _, r := range sb.Requests() {
		if r.Endpoint == "dynamicGroup" && r.Meeting == meeting {
			sent = append(sent, r)
		}
	}
	var lines []string
	for _, r := range sent {
		lines = append(lines, fmt.Sprintf("arrived %s %d/%d", r.At.Format("15:04:05.000"), r.Status, r.ErrorCode))
	}
	t.Logf("dup-2: %v (each answered 9 s after it arrived); event %s %s", lines, evs[0].Subject, evs[0].Data)
	if len(sent) >= 2 {
		t.Fatalf("command dup-2 reached the API %d times, the second while the first was in flight (%s): "+
			"the token fetch before the gate is outside PendingUntil", len(sent), strings.Join(lines, ", "))
	}
}
