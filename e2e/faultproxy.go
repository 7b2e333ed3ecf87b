package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/xygroup/xygroup/xylink"
)

// Faults are what the fault proxy does to the traffic between the workers and
// the sandbox. Ratios are 0..1; each request draws from one seeded RNG.
type Faults struct {
	// InLatency plus a uniform random InJitter delays each request before it
	// reaches the sandbox (so before the sandbox counts it).
	InLatency, InJitter time.Duration
	// OutLatency plus OutJitter delays each answer on its way back.
	OutLatency, OutJitter time.Duration
	// ErrorBefore answers dynamicGroup with ErrorBeforeStatus (default 500)
	// without forwarding it.
	ErrorBefore       float64
	ErrorBeforeStatus int
	// ErrorAfter forwards dynamicGroup (the create takes effect), then throws
	// the answer away and answers ErrorAfterStatus (default 504).
	ErrorAfter       float64
	ErrorAfterStatus int
	// Reset closes the connection of a dynamicGroup request without an answer.
	// ResetAfter forwards first: the create takes effect and the answer is lost.
	Reset, ResetAfter float64
	// TokenDelay delays the 2.0 token endpoints (app token and refresh).
	TokenDelay time.Duration
}

// Arrival is one dynamicGroup request as the fault proxy saw it, after the
// inbound delay: the moment it reached "the API".
type Arrival struct {
	// Sent is when the request reached the proxy, before any delay: about when
	// the worker sent it.
	Sent         time.Time
	At           time.Time
	EnterpriseID string
	Meeting      string
	// GroupName is the request's groupName (a scenario can name the command
	// there, to tell several commands of one meeting apart).
	GroupName string
	Forwarded bool
	Answer    int // HTTP status the worker got (0: connection reset)
	// Upstream is the sandbox's status when the request was forwarded, whatever
	// the worker got instead (200: the create took effect).
	Upstream int
	// Answered is when the answer was written (or the connection closed): a
	// client whose timeout passed before it never read the answer.
	Answered time.Time
}

// OutageWindow is an outage the proxy answered 503 for, without forwarding,
// with the dynamicGroup calls that arrived during it, per enterprise.
type OutageWindow struct {
	EnterpriseID string // empty: every enterprise
	From, Until  time.Time

	mu    sync.Mutex
	calls map[string]int
}

// Calls during the outage, per enterprise.
func (o *OutageWindow) Calls() map[string]int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return maps.Clone(o.calls)
}

// Total is the number of calls during the outage.
func (o *OutageWindow) Total() int {
	n := 0
	for _, v := range o.Calls() {
		n += v
	}
	return n
}

// FaultProxy is an HTTP proxy in front of the sandbox that injects faults.
type FaultProxy struct {
	URL    string
	target *url.URL
	client *http.Client
	srv    *http.Server

	mu       sync.Mutex
	rng      *mrand.Rand
	faults   Faults
	outages  []*OutageWindow
	arrivals []Arrival
	secrets  map[string]bool // credentials seen on the wire
	sigs     []string        // request signatures seen on the wire
	counts   map[string]int  // injected faults by kind
	watch    func(remoteAddr, meeting string)
}

// NewFaultProxy serves a proxy to target on loopback, closed at cleanup.
func NewFaultProxy(tb testing.TB, target string, seed uint64) *FaultProxy {
	tb.Helper()
	u, err := url.Parse(target)
	if err != nil {
		tb.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	p := &FaultProxy{URL: "http://" + ln.Addr().String(), target: u, rng: mrand.New(mrand.NewPCG(seed, 0xfa017)),
		secrets: map[string]bool{}, counts: map[string]int{},
		client: &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 256, IdleConnTimeout: 30 * time.Second}}}
	p.srv = &http.Server{Handler: p, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = p.srv.Serve(ln) }()
	tb.Cleanup(func() { _ = p.srv.Close() })
	return p
}

// SetFaults replaces the faults (at runtime).
func (p *FaultProxy) SetFaults(f Faults) {
	p.mu.Lock()
	p.faults = f
	p.mu.Unlock()
}

// Outage starts an outage of d now for one enterprise ("" for all).
func (p *FaultProxy) Outage(enterpriseID string, d time.Duration) *OutageWindow {
	now := time.Now()
	o := &OutageWindow{EnterpriseID: enterpriseID, From: now, Until: now.Add(d), calls: map[string]int{}}
	p.mu.Lock()
	p.outages = append(p.outages, o)
	p.mu.Unlock()
	return o
}

// Watch calls f for every dynamicGroup request as it comes in, before any
// delay, with the caller's address (its side of the connection). nil stops.
func (p *FaultProxy) Watch(f func(remoteAddr, meeting string)) {
	p.mu.Lock()
	p.watch = f
	p.mu.Unlock()
}

// Outages are the outages started so far.
func (p *FaultProxy) Outages() []*OutageWindow {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]*OutageWindow(nil), p.outages...)
}

// Arrivals are the dynamicGroup requests seen so far.
func (p *FaultProxy) Arrivals() []Arrival {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]Arrival(nil), p.arrivals...)
}

// Injected counts the faults injected, by kind.
func (p *FaultProxy) Injected() map[string]int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return maps.Clone(p.counts)
}

// Secrets are the credentials seen on the wire (bearer tokens, issued access
// and refresh tokens, sign secrets) and a sample of the request signatures (the
// first and last 100; there is one per call).
func (p *FaultProxy) Secrets() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]string, 0, len(p.secrets)+200)
	for s := range p.secrets {
		out = append(out, s)
	}
	sigs := p.sigs
	if len(sigs) > 200 {
		sigs = append(sigs[:100:100], sigs[len(sigs)-100:]...)
	}
	for _, s := range sigs {
		out = append(out, s)
		if u := url.QueryEscape(s); u != s {
			out = append(out, u)
		}
	}
	return out
}

func (p *FaultProxy) noteSignature(s string) {
	if len(s) < 8 {
		return
	}
	p.mu.Lock()
	p.sigs = append(p.sigs, s)
	p.mu.Unlock()
}

func (p *FaultProxy) noteSecret(s string) {
	if len(s) < 8 {
		return
	}
	p.mu.Lock()
	p.secrets[s] = true
	if u := url.QueryEscape(s); u != s {
		p.secrets[u] = true
	}
	p.mu.Unlock()
}

// draw returns a uniform number in [0,1) from the seeded RNG.
func (p *FaultProxy) draw() float64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.rng.Float64()
}

// jitter is base plus a uniform random duration in [0,j).
func (p *FaultProxy) jitter(base, j time.Duration) time.Duration {
	if j <= 0 {
		return base
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return base + time.Duration(p.rng.Int64N(int64(j)))
}

func (p *FaultProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	sent := time.Now()
	p.mu.Lock()
	f := p.faults
	p.mu.Unlock()
	isGroup := strings.HasSuffix(r.URL.Path, "/"+xylink.DynamicGroupPath)
	isToken := r.URL.Path == xylink.AppTokenPath || r.URL.Path == xylink.RefreshTokenPath
	if !isGroup && !isToken {
		p.forward(w, r, nil)
		return
	}
	if bearer, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok {
		p.noteSecret(bearer)
	}
	p.noteSignature(r.Header.Get(xylink.HeaderSign))
	p.noteSignature(r.URL.Query().Get("signature"))
	body, _ := io.ReadAll(io.LimitReader(r.Body, 2<<20))
	r.Body = io.NopCloser(bytes.NewReader(body))
	var meeting struct {
		MeetingRoomNumber string `json:"meetingRoomNumber"`
		GroupName         string `json:"groupName"`
	}
	if isGroup {
		_ = json.Unmarshal(body, &meeting)
		p.mu.Lock()
		watch := p.watch
		p.mu.Unlock()
		if watch != nil {
			watch(r.RemoteAddr, meeting.MeetingRoomNumber)
		}
	}
	time.Sleep(p.jitter(f.InLatency, f.InJitter))
	if isToken {
		time.Sleep(f.TokenDelay)
		p.forward(w, r, func(b []byte) { p.noteTokenAnswer(b) })
		time.Sleep(p.jitter(f.OutLatency, f.OutJitter))
		return
	}
	a := Arrival{Sent: sent, At: time.Now(), EnterpriseID: r.URL.Query().Get("enterpriseId"), Meeting: meeting.MeetingRoomNumber,
		GroupName: meeting.GroupName}
	defer func() {
		a.Answered = time.Now()
		p.mu.Lock()
		p.arrivals = append(p.arrivals, a)
		p.mu.Unlock()
	}()
	if o := p.outageAt(a.At, a.EnterpriseID); o != nil {
		o.mu.Lock()
		o.calls[a.EnterpriseID]++
		o.mu.Unlock()
		p.count("outage")
		a.Answer = http.StatusServiceUnavailable
		writeXYError(w, http.StatusServiceUnavailable, 50301, "error.service.unavailable")
		return
	}
	switch x := p.draw(); {
	case x < f.Reset:
		p.count("reset")
		p.hangUp(w)
		return
	case x < f.Reset+f.ErrorBefore:
		p.count("errorBefore")
		a.Answer = statusOr(f.ErrorBeforeStatus, http.StatusInternalServerError)
		writeXYError(w, a.Answer, 50001, "error.internal")
		return
	}
	a.Forwarded = true
	rec := &recorder{header: http.Header{}}
	p.forward(rec, r, nil)
	a.Upstream = rec.status
	switch x := p.draw(); {
	case x < f.ResetAfter:
		p.count("resetAfter")
		p.hangUp(w)
		return
	case x < f.ResetAfter+f.ErrorAfter:
		p.count("errorAfter")
		a.Answer = statusOr(f.ErrorAfterStatus, http.StatusGatewayTimeout)
		time.Sleep(p.jitter(f.OutLatency, f.OutJitter))
		writeXYError(w, a.Answer, 50401, "error.gateway.timeout")
		return
	}
	time.Sleep(p.jitter(f.OutLatency, f.OutJitter))
	a.Answer = rec.status
	for k, v := range rec.header {
		w.Header()[k] = v
	}
	w.WriteHeader(rec.status)
	_, _ = w.Write(rec.body.Bytes())
}

func statusOr(s, def int) int {
	if s == 0 {
		return def
	}
	return s
}

func (p *FaultProxy) count(kind string) {
	p.mu.Lock()
	p.counts[kind]++
	p.mu.Unlock()
}

func (p *FaultProxy) outageAt(t time.Time, enterpriseID string) *OutageWindow {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, o := range p.outages {
		if (o.EnterpriseID == "" || o.EnterpriseID == enterpriseID) && !t.Before(o.From) && t.Before(o.Until) {
			return o
		}
	}
	return nil
}

// hangUp closes the connection without an answer (the client sees a reset or
// an unexpected EOF).
func (p *FaultProxy) hangUp(w http.ResponseWriter) {
	hj, ok := w.(http.Hijacker)
	if !ok {
		panic("fault proxy: no hijacker")
	}
	conn, _, err := hj.Hijack()
	if err != nil {
		return
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = conn.Close()
}

// forward sends r to the sandbox and writes its answer to w; seen, when set,
// gets the answer's body.
func (p *FaultProxy) forward(w http.ResponseWriter, r *http.Request, seen func([]byte)) {
	u := *p.target
	u.Path = r.URL.Path
	u.RawPath = r.URL.RawPath
	u.RawQuery = r.URL.RawQuery
	out, err := http.NewRequestWithContext(r.Context(), r.Method, u.String(), r.Body)
	if err != nil {
		writeXYError(w, http.StatusBadGateway, 50201, "error.proxy")
		return
	}
	out.Header = r.Header.Clone()
	resp, err := p.client.Do(out)
	if err != nil {
		writeXYError(w, http.StatusBadGateway, 50201, "error.proxy")
		return
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if seen != nil {
		seen(b)
	}
	for k, v := range resp.Header {
		w.Header()[k] = v
	}
	w.WriteHeader(resp.StatusCode)
	_, _ = w.Write(b)
}

func (p *FaultProxy) noteTokenAnswer(b []byte) {
	var ans struct {
		Data struct {
			Access     string `json:"access_token"`
			Refresh    string `json:"refresh_token"`
			SignSecret string `json:"signSecret"`
		} `json:"data"`
	}
	if json.Unmarshal(b, &ans) == nil {
		p.noteSecret(ans.Data.Access)
		p.noteSecret(ans.Data.Refresh)
		p.noteSecret(ans.Data.SignSecret)
	}
}

func writeXYError(w http.ResponseWriter, status, code int, user string) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	fmt.Fprintf(w, `{"errorCode":%d,"userMessage":%q,"developerMessage":"injected by the fault proxy"}`+"\n", code, user)
}

// recorder holds an answer so that the proxy can decide what the worker gets.
type recorder struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (r *recorder) Header() http.Header         { return r.header }
func (r *recorder) WriteHeader(s int)           { r.status = s }
func (r *recorder) Write(b []byte) (int, error) { return r.body.Write(b) }
