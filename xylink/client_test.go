package xylink_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	wt "github.com/xygroup/xygroup/worker/workertest"
	"github.com/xygroup/xygroup/xylink"
	"github.com/xygroup/xygroup/xylink/sandbox"
)

const (
	ent1, token1         = "ent-v1", "token-v1-0123456789abcdef"
	ent2, client2, secr2 = "ent-v2", "client-v2", "client-secret-v2-0123456789"
)

// startSandbox serves a sandbox with a 1.0 and a 2.0 tenant over real HTTP.
func startSandbox(t *testing.T, cfg sandbox.Config) *sandbox.Server {
	t.Helper()
	cfg.Enterprises = append(cfg.Enterprises,
		sandbox.Enterprise{ID: ent1, Token: token1},
		sandbox.Enterprise{ID: ent2, ClientID: client2, ClientSecret: secr2})
	sb, err := sandbox.Start(cfg, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sb.Close(context.Background()) })
	return sb
}

func newClient(t *testing.T, base string, opts ...xylink.Option) *xylink.Client {
	t.Helper()
	opts = append([]xylink.Option{xylink.WithTenants(
		xylink.Credentials{EnterpriseID: ent1, Token: token1},
		xylink.Credentials{EnterpriseID: ent2, ClientID: client2, ClientSecret: secr2, SignType: xylink.SignHMACSHA256},
	)}, opts...)
	c, err := xylink.NewClient(base, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func manual(meeting string) *xylink.CreateGroupsRequest {
	return &xylink.CreateGroupsRequest{MeetingRoomNumber: meeting, Mode: xylink.ModeManual, GroupList: []xylink.GroupSpec{
		{GroupName: "分组1", MemberList: []xylink.MemberSpec{{ID: 101990441, Type: 5, ParticipantNumber: "18961782725"}}},
		{GroupName: "分组2", MemberList: []xylink.MemberSpec{{ID: 101875491, Type: 5, ParticipantNumber: "18811119988"}}},
	}}
}

func apiErr(t *testing.T, err error) *xylink.APIError {
	t.Helper()
	var ae *xylink.APIError
	if !errors.As(err, &ae) {
		t.Fatalf("want *APIError, got %T %v", err, err)
	}
	return ae
}

// The client against the sandbox, for both signature versions: every answer the
// worker must tell apart, each classified by the one table.
func TestClientAgainstSandbox(t *testing.T) {
	sb := startSandbox(t, sandbox.Config{Rate: 1000})
	c := newClient(t, sb.URL)
	ctx := context.Background()
	for _, ent := range []string{ent1, ent2} {
		t.Run(ent, func(t *testing.T) {
			room := func(s string) string { return ent + "-" + s }
			// success, like the API page's example
			groups, err := c.CreateGroups(ctx, ent, manual(room("1")))
			if err != nil {
				t.Fatalf("create: %v", err)
			}
			if len(groups) != 2 || !strings.HasPrefix(groups[0].GroupNo, "mms") || groups[0].GroupName != "分组1" ||
				groups[0].MemberList[0].ID != 101990441 || groups[0].MemberList[0].ExternalUserID != nil || !groups[0].MemberList[0].CanSetAdmin {
				t.Fatalf("groups = %+v", groups)
			}
			// a second create in the same meeting: 66684
			_, err = c.CreateGroups(ctx, ent, manual(room("1")))
			if ae := apiErr(t, err); ae.ErrorCode != xylink.CodeAlreadyOpen || xylink.Classify(err).Class != xylink.ClassAlreadyOpen {
				t.Fatalf("second create: %+v", ae)
			}
			// a meeting that starts later: 66620, then success once it started
			if _, err := sb.AddMeeting(sandbox.MeetingSpec{Number: room("2"), StartsIn: sandbox.Duration(time.Hour)}); err != nil {
				t.Fatal(err)
			}
			_, err = c.CreateGroups(ctx, ent, manual(room("2")))
			if ae := apiErr(t, err); ae.ErrorCode != xylink.CodeNoMeeting || ae.UserMessage != "error.no.meeting" ||
				xylink.Classify(err).Disposition != xylink.Park {
				t.Fatalf("not started: %+v", ae)
			}
			sb.StartMeeting(room("2"))
			if _, err := c.CreateGroups(ctx, ent, manual(room("2"))); err != nil {
				t.Fatalf("after start: %v", err)
			}
			// more groups than the meeting allows: 66685
			if _, err := sb.AddMeeting(sandbox.MeetingSpec{Number: room("3"), MaxGroups: 1}); err != nil {
				t.Fatal(err)
			}
			_, err = c.CreateGroups(ctx, ent, manual(room("3")))
			if ae := apiErr(t, err); ae.ErrorCode != xylink.CodeTooManyGroups || xylink.Classify(err).Class != xylink.ClassTooManyGroups {
				t.Fatalf("too many: %+v", ae)
			}
			// random mode deals the meeting's participants
			n := 3
			groups, err = c.CreateGroups(ctx, ent, &xylink.CreateGroupsRequest{MeetingRoomNumber: room("4"), Mode: xylink.ModeRandom, GroupCount: &n})
			if err != nil || len(groups) != 3 || len(groups[0].MemberList) == 0 {
				t.Fatalf("random: %+v %v", groups, err)
			}
		})
	}
	// an ended meeting answers 66620 too
	sb.EndMeeting(ent1 + "-1")
	_, err := c.CreateGroups(ctx, ent1, manual(ent1+"-1"))
	if ae := apiErr(t, err); ae.ErrorCode != xylink.CodeNoMeeting {
		t.Fatalf("ended: %+v", ae)
	}
	st := sb.Stats()
	if st.ByAnswer["200"] != 6 || st.ByAnswer["66684"] != 2 || st.ByAnswer["66620"] != 3 || st.ByAnswer["66685"] != 2 {
		t.Fatalf("sandbox stats = %+v", st.ByAnswer)
	}
	if len(st.DuplicateCreates) != 0 {
		t.Fatalf("duplicate creates: %v", st.DuplicateCreates)
	}
}

func TestClientWrongCredentialsGet401(t *testing.T) {
	sb := startSandbox(t, sandbox.Config{Rate: 1000})
	ctx := context.Background()
	bad, err := xylink.NewClient(sb.URL, xylink.WithTenants(
		xylink.Credentials{EnterpriseID: ent1, Token: "wrong-token"},
		xylink.Credentials{EnterpriseID: ent2, ClientID: client2, ClientSecret: "wrong-secret"},
		xylink.Credentials{EnterpriseID: "nobody", Token: "whatever"},
	))
	if err != nil {
		t.Fatal(err)
	}
	_, err = bad.CreateGroups(ctx, ent1, manual("5"))
	if ae := apiErr(t, err); ae.HTTPStatus != 401 || ae.ErrorCode != sandbox.CodeBadSignature {
		t.Fatalf("bad 1.0 token: %+v", ae)
	}
	if d := xylink.Classify(err).Disposition; d != xylink.StopTenant {
		t.Fatalf("bad signature classified %v", d)
	}
	_, err = bad.CreateGroups(ctx, ent2, manual("5"))
	var ce *xylink.CredentialsError
	if !errors.As(err, &ce) || xylink.Classify(err).Disposition != xylink.StopTenant {
		t.Fatalf("bad 2.0 secret: %T %v", err, err)
	}
	_, err = bad.CreateGroups(ctx, "nobody", manual("5"))
	if ae := apiErr(t, err); ae.HTTPStatus != 401 {
		t.Fatalf("unknown enterprise: %+v", ae)
	}
	// A tenant the client does not know is the command's fault, not the platform's.
	_, err = bad.CreateGroups(ctx, "not-configured", manual("5"))
	if !errors.Is(err, xylink.ErrUnknownTenant) || xylink.Classify(err).Class != xylink.ClassInvalidCommand {
		t.Fatalf("unconfigured tenant: %v", err)
	}
	// A tampered signature (right token, body changed in flight) is refused.
	tamper := &http.Client{Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
		b := new(bytes.Buffer)
		_, _ = b.ReadFrom(r.Body)
		body := bytes.Replace(b.Bytes(), []byte("分组1"), []byte("分组X"), 1)
		r.Body = ioNopCloser{bytes.NewReader(body)}
		r.ContentLength = int64(len(body))
		return http.DefaultTransport.RoundTrip(r)
	})}
	c := newClient(t, sb.URL, xylink.WithHTTPClient(tamper))
	for _, ent := range []string{ent1, ent2} {
		_, err = c.CreateGroups(ctx, ent, manual("6"+ent))
		if ae := apiErr(t, err); ae.HTTPStatus != 401 {
			t.Fatalf("%s tampered body: %+v", ent, ae)
		}
	}
}

func TestClientRateLimitAnd5xx(t *testing.T) {
	sb := startSandbox(t, sandbox.Config{Rate: 5})
	c := newClient(t, sb.URL)
	ctx := context.Background()
	var limited int
	for i := range 8 {
		_, err := c.CreateGroups(ctx, ent1, manual(fmt.Sprintf("rl-%d", i)))
		if err != nil {
			ae := apiErr(t, err)
			if ae.HTTPStatus != 429 || xylink.Classify(err).Disposition != xylink.RateLimited {
				t.Fatalf("want 429, got %+v", ae)
			}
			limited++
		}
	}
	if limited != 3 {
		t.Fatalf("rate 5 over 8 quick calls: %d limited, want 3", limited)
	}
	if st := sb.Stats(); st.Enterprises[ent1].MaxInWindow != 8 || st.ByAnswer["429"] != 3 {
		t.Fatalf("stats: %+v", st)
	}

	sb.SetFaults(sandbox.Faults{ErrorRatio: 1})
	_, err := c.CreateGroups(ctx, ent2, manual("5xx"))
	if ae := apiErr(t, err); ae.HTTPStatus != 500 || xylink.Classify(err).Disposition != xylink.Retry || !xylink.Classify(err).BreakerFailure {
		t.Fatalf("5xx: %+v", ae)
	}
	sb.SetFaults(sandbox.Faults{})
	sb.AddOutage(sandbox.Outage{EnterpriseID: ent2, From: time.Now().Add(-time.Second), Until: time.Now().Add(time.Hour)})
	_, err = c.CreateGroups(ctx, ent2, manual("outage"))
	if ae := apiErr(t, err); ae.HTTPStatus != 503 {
		t.Fatalf("outage: %+v", ae)
	}
	// The outage is ent2's: ent1 is served (after its rate window passed).
	time.Sleep(time.Second) // the sandbox's own one-second window, not a condition to await
	if _, err := c.CreateGroups(ctx, ent1, manual("other-tenant")); err != nil {
		t.Fatalf("other tenant during outage: %v", err)
	}
}

// A call that times out after the sandbox processed it has an unknown outcome; its
// retry meets 66684, which the worker reconciles as created.
func TestClientTimeoutAfterProcessing(t *testing.T) {
	sb := startSandbox(t, sandbox.Config{Rate: 1000, Faults: sandbox.Faults{Latency: sandbox.Duration(2 * time.Second)}})
	c := newClient(t, sb.URL, xylink.WithTimeout(200*time.Millisecond))
	_, err := c.CreateGroups(context.Background(), ent1, manual("slow"))
	var te *xylink.TransportError
	if !errors.As(err, &te) || !te.Sent {
		t.Fatalf("want a sent TransportError, got %T %v", err, err)
	}
	o := xylink.Classify(err)
	if o.Disposition != xylink.Retry || !o.Unknown || o.Class != xylink.ClassUnavailable {
		t.Fatalf("timeout classified %+v", o)
	}
	m, ok := sb.Meeting("slow")
	if !ok || m.Creates != 1 {
		t.Fatalf("sandbox did not process the timed-out call: %+v", m)
	}
	sb.SetFaults(sandbox.Faults{})
	_, err = c.CreateGroups(context.Background(), ent1, manual("slow"))
	if ae := apiErr(t, err); ae.ErrorCode != xylink.CodeAlreadyOpen {
		t.Fatalf("retry: %+v", ae)
	}
	// A connection refused never reached the platform: retry, outcome known. (A
	// fresh client: a pooled connection that the server closed gives EOF after
	// writing, an unknown outcome.)
	_ = sb.Close(context.Background())
	c = newClient(t, sb.URL)
	_, err = c.CreateGroups(context.Background(), ent1, manual("down"))
	if o := xylink.Classify(err); o.Disposition != xylink.Retry || o.Unknown {
		t.Fatalf("connection refused classified %+v (%v)", o, err)
	}
}

// The 2.0 app token: one fetch however many calls wait; renewed in the background
// before it expires (one refresh for fifty concurrent calls, none of which waits
// for it); fetched again when rejected.
func TestAppTokenLifecycle(t *testing.T) {
	sb := startSandbox(t, sandbox.Config{Rate: 10000, TokenTTL: time.Hour})
	var clock struct {
		sync.Mutex
		offset time.Duration
	}
	now := func() time.Time {
		clock.Lock()
		defer clock.Unlock()
		return time.Now().Add(clock.offset)
	}
	c := newClient(t, sb.URL, xylink.WithClock(now))
	fifty := func(round string) {
		t.Helper()
		var wg sync.WaitGroup
		errs := make(chan error, 50)
		for i := range 50 {
			wg.Go(func() {
				_, err := c.CreateGroups(context.Background(), ent2, manual(fmt.Sprintf("%s-%d", round, i)))
				errs <- err
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatalf("%s: %v", round, err)
			}
		}
	}
	fifty("first")
	if n := c.TokenFetches(ent2); n != 1 {
		t.Fatalf("fifty concurrent first calls made %d token requests, want 1", n)
	}
	// 50 minutes later the token is inside its renewal margin: one refresh.
	clock.Lock()
	clock.offset = 50 * time.Minute
	clock.Unlock()
	// The calls go on with the current token; the renewal runs in the background.
	fifty("renew")
	refreshes := func() int {
		n := 0
		for _, r := range sb.Requests() {
			if r.Endpoint == "refresh_token" && r.Status == 200 {
				n++
			}
		}
		return n
	}
	deadline := time.Now().Add(10 * time.Second)
	for refreshes() == 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if n := c.TokenFetches(ent2); n != 2 {
		t.Fatalf("renewal made %d token requests in all, want 2", n)
	}
	if n := refreshes(); n != 1 {
		t.Fatalf("sandbox saw %d refreshes, want 1", n)
	}
	// The platform expires the token mid-run: every call gets 401 once, one new
	// token is fetched, and no call fails.
	sb.ExpireTokens()
	fifty("expired")
	if n := c.TokenFetches(ent2); n != 3 {
		t.Fatalf("after expiry: %d token requests in all, want 3", n)
	}
	if st := sb.Stats(); st.TokenIssues != 3 || st.ByAnswer["401"] == 0 {
		t.Fatalf("sandbox: %d tokens issued, %d 401s", st.TokenIssues, st.ByAnswer["401"])
	}
}

func TestClientResponseBoundAndPrivateBase(t *testing.T) {
	// A private deployment behind a path prefix.
	sb := sandbox.New(sandbox.Config{Rate: 1000, Enterprises: []sandbox.Enterprise{{ID: ent1, Token: token1}}})
	mux := http.NewServeMux()
	mux.Handle("/xy/", http.StripPrefix("/xy", sb.Handler()))
	mux.HandleFunc("/big/", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(200)
		_, _ = w.Write(bytes.Repeat([]byte("["), 4096))
	})
	srv := httptest.NewServer(mux)
	defer srv.Close()
	c := newClient(t, srv.URL+"/xy/")
	if _, err := c.CreateGroups(context.Background(), ent1, manual("p1")); err != nil {
		t.Fatalf("private base URL: %v", err)
	}
	c = newClient(t, srv.URL+"/big", xylink.WithMaxResponseBytes(1024))
	_, err := c.CreateGroups(context.Background(), ent1, manual("p2"))
	var te *xylink.TransportError
	if !errors.As(err, &te) || !errors.Is(err, xylink.ErrResponseTooLarge) || !xylink.Classify(err).Unknown {
		t.Fatalf("oversize answer: %v", err)
	}
	if _, err := xylink.NewClient("ftp://x"); err == nil {
		t.Fatal("ftp base URL accepted")
	}
	// Invalid requests are never sent.
	_, err = c.CreateGroups(context.Background(), ent1, &xylink.CreateGroupsRequest{Mode: "manual"})
	var ve *xylink.ValidationError
	if !errors.As(err, &ve) {
		t.Fatalf("invalid request: %v", err)
	}
}

// No token, secret, signature or access token reaches a log line or an error.
func TestNoSecretsInLogsOrErrors(t *testing.T) {
	var logs wt.SyncBuffer
	logger := zerolog.New(&logs).Level(zerolog.DebugLevel)
	sb := startSandbox(t, sandbox.Config{Rate: 3, Logger: logger, Faults: sandbox.Faults{}})
	// Capture what the client really sends, to know every secret on the wire.
	var wire struct {
		sync.Mutex
		values []string
	}
	capture := &http.Client{Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
		wire.Lock()
		if s := r.URL.Query().Get("signature"); s != "" && s != "signature" {
			wire.values = append(wire.values, s, r.URL.Query().Encode())
		}
		for _, h := range []string{"Authorization", xylink.HeaderSign} {
			if v := r.Header.Get(h); v != "" {
				wire.values = append(wire.values, v, strings.TrimPrefix(v, "Bearer "))
			}
		}
		wire.Unlock()
		resp, err := http.DefaultTransport.RoundTrip(r)
		if err == nil && r.URL.Path == xylink.AppTokenPath {
			var b bytes.Buffer
			_, _ = b.ReadFrom(resp.Body)
			var ans struct {
				Data map[string]any `json:"data"`
			}
			_ = json.Unmarshal(b.Bytes(), &ans)
			wire.Lock()
			for _, k := range []string{"access_token", "refresh_token", "signSecret"} {
				wire.values = append(wire.values, fmt.Sprint(ans.Data[k]))
			}
			wire.Unlock()
			resp.Body = ioNopCloser{bytes.NewReader(b.Bytes())}
		}
		return resp, err
	})}
	c := newClient(t, sb.URL, xylink.WithLogger(logger), xylink.WithHTTPClient(capture), xylink.WithTimeout(300*time.Millisecond))
	var errs []string
	note := func(err error) {
		if err != nil {
			errs = append(errs, err.Error(), fmt.Sprintf("%+v", err), fmt.Sprintf("%#v", err))
		}
	}
	ctx := context.Background()
	for i := range 5 { // success, 66684 and 429
		_, err := c.CreateGroups(ctx, ent1, manual(fmt.Sprint("leak", i%2)))
		note(err)
		_, err = c.CreateGroups(ctx, ent2, manual(fmt.Sprint("leak", i%2)))
		note(err)
	}
	sb.SetFaults(sandbox.Faults{Latency: sandbox.Duration(time.Second)})
	_, err := c.CreateGroups(ctx, ent1, manual("leak-timeout")) // timeout: net/http quotes the URL
	note(err)
	sb.SetFaults(sandbox.Faults{})
	wrong := newClient(t, sb.URL, xylink.WithLogger(logger), xylink.WithTenants(
		xylink.Credentials{EnterpriseID: ent1, Token: "wrong-" + token1},
		xylink.Credentials{EnterpriseID: ent2, ClientID: client2, ClientSecret: "wrong-" + secr2}))
	for _, ent := range []string{ent1, ent2} {
		_, err := wrong.CreateGroups(ctx, ent, manual("leak-bad"))
		note(err)
	}
	_ = sb.Close(ctx)
	_, err = c.CreateGroups(ctx, ent1, manual("leak-refused")) // connection refused: URL in the error
	note(err)
	creds := xylink.Credentials{EnterpriseID: ent1, Token: token1, ClientSecret: secr2}
	js, _ := json.Marshal(creds)
	errs = append(errs, fmt.Sprintf("%v %+v %#v %s", creds, creds, creds, js))
	logger.Info().Interface("creds", creds).Msg("credentials")

	if len(errs) < 10 || logs.Len() == 0 {
		t.Fatalf("too little captured: %d errors, %d bytes of logs", len(errs), logs.Len())
	}
	secrets := []string{token1, secr2, "wrong-" + token1, "wrong-" + secr2}
	wire.Lock()
	for _, v := range wire.values {
		if len(v) >= 8 {
			secrets = append(secrets, v)
		}
	}
	wire.Unlock()
	if len(secrets) < 10 {
		t.Fatalf("captured only %d secrets from the wire", len(secrets))
	}
	haystack := logs.String() + "\n" + strings.Join(errs, "\n")
	for _, s := range secrets {
		if strings.Contains(haystack, s) {
			t.Errorf("secret %.6s… found in logs or errors", s)
		}
	}
	if !strings.Contains(haystack, "signature=%5Bredacted%5D") && !strings.Contains(haystack, "signature=[redacted]") {
		t.Errorf("no redacted URL in the errors; the test did not exercise URL errors:\n%s", strings.Join(errs, "\n"))
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

type ioNopCloser struct{ *bytes.Reader }

func (ioNopCloser) Close() error { return nil }

// The gate runs right before each request, after the token is in hand: once for
// a plain call, again for the repeat after a rejected token, never while a token
// is being fetched; a refusal sends nothing.
func TestGateBeforeEachRequest(t *testing.T) {
	sb := startSandbox(t, sandbox.Config{Rate: 10000})
	var gates, fetchesAtGate []int
	c := newClient(t, sb.URL)
	gate := xylink.BeforeEachRequest(func(context.Context) error {
		gates = append(gates, len(sb.Requests()))
		fetchesAtGate = append(fetchesAtGate, c.TokenFetches(ent2))
		return nil
	})
	if _, err := c.CreateGroups(context.Background(), ent2, manual("gate-1"), gate); err != nil {
		t.Fatal(err)
	}
	// The first gate came after the token fetch (one request recorded: app_token).
	if len(gates) != 1 || gates[0] != 1 || fetchesAtGate[0] != 1 {
		t.Fatalf("gate calls %v (requests recorded before each), token fetches %v", gates, fetchesAtGate)
	}
	sb.ExpireTokens()
	gates, fetchesAtGate = nil, nil
	if _, err := c.CreateGroups(context.Background(), ent2, manual("gate-2"), gate); err != nil {
		t.Fatal(err)
	}
	// 401 with the old token, then a new token, then the gate again, then the repeat.
	if len(gates) != 2 || fetchesAtGate[1] != 2 || gates[1] != gates[0]+2 {
		t.Fatalf("after a rejected token: gate calls %v, token fetches %v", gates, fetchesAtGate)
	}
	before := len(sb.Requests())
	_, err := c.CreateGroups(context.Background(), ent1, manual("gate-3"), xylink.BeforeEachRequest(func(context.Context) error {
		return errors.New("held")
	}))
	var ge *xylink.GateError
	if !errors.As(err, &ge) || ge.Requests != 0 || len(sb.Requests()) != before {
		t.Fatalf("refused gate: %T %v, %d requests sent", err, err, len(sb.Requests())-before)
	}
	if o := xylink.Classify(err); o.Unknown || !o.BreakerExcluded || o.Disposition != xylink.Retry {
		t.Fatalf("refused gate classified %+v", o)
	}
}
