package xylink

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"
	"go.opentelemetry.io/otel/trace"
)

// DynamicGroupPath is the endpoint's path below the API root.
const DynamicGroupPath = "conferenceControl/meeting/dynamicGroup"

// apiRoot is where the REST API lives below the base URL.
const apiRoot = "/api/rest/external/v1/"

// DefaultBaseURL is XYLink's public cloud.
const DefaultBaseURL = "https://sdk.xylink.com"

// Client calls the dynamicGroup API for one or more tenants. It is safe for
// concurrent use; create one per process and share it.
type Client struct {
	base    *url.URL
	hc      *http.Client
	maxResp int64
	timeout time.Duration
	now     func() time.Time
	log     zerolog.Logger
	tp      trace.TracerProvider // nil: requests are not traced

	mu      sync.RWMutex
	tenants map[string]*tenant
}

type tenant struct {
	creds    Credentials
	signType SignType
	tokens   *tokenSource // nil for signature 1.0
}

// Option configures a Client.
type Option func(*Client)

// WithHTTPClient replaces the HTTP client (its Timeout is kept if set).
func WithHTTPClient(hc *http.Client) Option { return func(c *Client) { c.hc = hc } }

// WithTimeout bounds each API request and each token fetch (default 10 s).
func WithTimeout(d time.Duration) Option { return func(c *Client) { c.timeout = d } }

// WithMaxResponseBytes bounds how much of an answer is read (default 1 MiB).
func WithMaxResponseBytes(n int64) Option { return func(c *Client) { c.maxResp = n } }

// WithLogger sets the logger for per-call debug lines and token renewals.
func WithLogger(l zerolog.Logger) Option { return func(c *Client) { c.log = l } }

// WithClock replaces time.Now for token lifetimes (when to renew an app token).
// Signed timestamps always use the wall clock, which the platform checks.
func WithClock(now func() time.Time) Option { return func(c *Client) { c.now = now } }

// WithTenants adds tenants' credentials.
func WithTenants(creds ...Credentials) Option {
	return func(c *Client) {
		for _, cr := range creds {
			c.tenants[cr.EnterpriseID] = newTenant(c, cr)
		}
	}
}

// NewClient returns a client for the API at baseURL (DefaultBaseURL when empty).
// A path in baseURL is kept as a prefix, for private deployments behind a gateway.
func NewClient(baseURL string, opts ...Option) (*Client, error) {
	if baseURL == "" {
		baseURL = DefaultBaseURL
	}
	u, err := url.Parse(baseURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("xylink: base URL %q must be http(s)://host[:port][/prefix]", redactURL(baseURL))
	}
	u.RawQuery, u.Fragment = "", ""
	u.Path = strings.TrimRight(u.Path, "/")
	c := &Client{
		base:    u,
		maxResp: 1 << 20,
		timeout: 10 * time.Second,
		now:     time.Now,
		log:     zerolog.Nop(),
		tenants: map[string]*tenant{},
	}
	for _, o := range opts {
		o(c)
	}
	if c.hc == nil {
		c.hc = &http.Client{Transport: newTransport()}
	}
	// Redirects are never followed: net/http would send the signed request (and
	// the app-token request, client secret included) again, to wherever the
	// answer points, on the one rate-limit grant of the first. A redirect is an
	// answer like any other status (see redirectError).
	hc := *c.hc
	hc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	if c.tp != nil {
		hc.Transport = traced(hc.Transport, c.tp)
	}
	c.hc = &hc
	if u.Scheme == "http" && !isLoopback(u.Hostname()) {
		c.log.Warn().Str("baseURL", u.Scheme+"://"+u.Host).
			Msg("XYLink base URL is plain http: tokens, signatures and app-token secrets cross the network unencrypted; use https")
	}
	for id, t := range c.tenants {
		if err := t.creds.Check(); err != nil {
			return nil, err
		}
		c.tenants[id] = newTenant(c, t.creds) // options may have set the clock after the tenants
	}
	return c, nil
}

// newTransport reuses connections: at 20 requests per second per tenant, a new TLS
// handshake per call would cost more than the call.
func newTransport() *http.Transport {
	return &http.Transport{
		Proxy:       http.ProxyFromEnvironment,
		DialContext: checkedDial((&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext),
		// HTTP/1.1: one request per connection at a time, so that the
		// check right before a request's first byte (CheckAtWrite) sees that
		// request's write and no other's. At 20 calls a second per tenant a
		// few kept-alive connections do.
		ForceAttemptHTTP2:     false,
		MaxIdleConns:          100,
		MaxIdleConnsPerHost:   64,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   5 * time.Second,
		ResponseHeaderTimeout: 30 * time.Second,
		ExpectContinueTimeout: time.Second,
	}
}

func newTenant(c *Client, cr Credentials) *tenant {
	st, _ := ParseSignType(string(cr.SignType))
	t := &tenant{creds: cr, signType: st}
	if cr.V2() {
		t.tokens = &tokenSource{now: c.now, timeout: c.timeout,
			fetch: func(ctx context.Context, refresh Secret) (*appToken, error) {
				return c.fetchToken(ctx, cr, refresh)
			}}
	}
	return t
}

// AddTenant adds or replaces a tenant's credentials.
func (c *Client) AddTenant(cr Credentials) error {
	if err := cr.Check(); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.tenants[cr.EnterpriseID] = newTenant(c, cr)
	return nil
}

// HasTenant reports whether credentials are configured for the enterprise.
func (c *Client) HasTenant(enterpriseID string) bool {
	c.mu.RLock()
	defer c.mu.RUnlock()
	_, ok := c.tenants[enterpriseID]
	return ok
}

// Tenants lists the configured enterprise ids.
func (c *Client) Tenants() []string {
	c.mu.RLock()
	defer c.mu.RUnlock()
	ids := make([]string, 0, len(c.tenants))
	for id := range c.tenants {
		ids = append(ids, id)
	}
	return ids
}

// TokenFetches reports how many app-token requests were made for a tenant
// (signature 2.0 only).
func (c *Client) TokenFetches(enterpriseID string) int {
	c.mu.RLock()
	t := c.tenants[enterpriseID]
	c.mu.RUnlock()
	if t == nil || t.tokens == nil {
		return 0
	}
	return t.tokens.fetchCount()
}

func (c *Client) tenant(enterpriseID string) (*tenant, error) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	t, ok := c.tenants[enterpriseID]
	if !ok {
		return nil, fmt.Errorf("%w: %q", ErrUnknownTenant, enterpriseID)
	}
	return t, nil
}

// CallOption configures one CreateGroups call.
type CallOption func(*callOptions)

type callOptions struct {
	gate    func(ctx context.Context) error
	atWrite func() error
}

// BeforeEachRequest has gate called immediately before each dynamicGroup request
// of the call: the first one, and the repeat after a rejected app token. The app
// token is in hand by then, so nothing but signing happens between gate's return
// and the request leaving: a rate-limit grant taken in gate is this request's
// alone, and no token fetch or other I/O can bunch granted requests together.
// When gate fails, the request is not sent and CreateGroups returns a *GateError.
func BeforeEachRequest(gate func(ctx context.Context) error) CallOption {
	return func(o *callOptions) { o.gate = gate }
}

// CheckAtWrite has check called right before each request's first byte is
// written, once the connection is in hand (a fresh TLS dial included), with
// the client's own transport (see NewClient; a client given its own
// http.Client calls it right before handing the request over). When check
// fails, nothing is written: the gate is asked again (a fresh rate-limit
// grant) and the request sent then, or, without a gate, CreateGroups returns
// a *GateError.
func CheckAtWrite(check func() error) CallOption {
	return func(o *callOptions) { o.atWrite = check }
}

// CreateGroups creates breakout groups in a meeting. The request is validated
// first (a *ValidationError is never sent). Other errors are *APIError,
// *TransportError, *CredentialsError or *GateError; pass any of them to Classify.
func (c *Client) CreateGroups(ctx context.Context, enterpriseID string, req *CreateGroupsRequest, opts ...CallOption) ([]Group, error) {
	if err := req.Validate(); err != nil {
		return nil, err
	}
	body, err := EncodeRequest(req)
	if err != nil {
		return nil, err
	}
	if len(body) > MaxRequestBytes {
		return nil, &ValidationError{Problems: []string{fmt.Sprintf("request body is %d bytes, more than %d", len(body), MaxRequestBytes)}}
	}
	t, err := c.tenant(enterpriseID)
	if err != nil {
		return nil, err
	}
	var o callOptions
	for _, opt := range opts {
		opt(&o)
	}
	var groups []Group
	err = c.call(ctx, t, http.MethodPost, DynamicGroupPath, body, &groups, o)
	return groups, err
}

// EncodeRequest is the exact body the client sends: compact JSON, non-ASCII and
// HTML characters as they are (the signature covers these bytes).
func EncodeRequest(req *CreateGroupsRequest) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(req); err != nil {
		return nil, fmt.Errorf("xylink: encode request: %w", err)
	}
	return bytes.TrimRight(buf.Bytes(), "\n"), nil
}

// call signs and sends one request; with signature 2.0 a rejected token is fetched
// again and the call repeated once (a 401 means the platform did not process it).
// The token is obtained before gate is called, and the request is signed after it
// returns, so that a request leaves right after its gate.
func (c *Client) call(ctx context.Context, t *tenant, method, path string, body []byte, out any, o callOptions) error {
	sent := 0 // requests of this call written
	for {
		var tok *appToken
		if t.tokens != nil {
			var err error
			if tok, err = t.tokens.get(ctx); err != nil {
				return c.tokenError(t, err)
			}
		}
		if o.gate != nil {
			if err := o.gate(ctx); err != nil {
				return &GateError{Requests: sent, Err: err}
			}
			if tok != nil {
				tok = t.tokens.newest(tok) // renewed while the gate waited: no I/O
			}
		}
		err := c.do(ctx, t, tok, method, path, body, out, o.atWrite)
		var held *heldAtWrite
		if errors.As(err, &held) {
			if o.gate != nil {
				continue // nothing written: the gate gives a fresh grant
			}
			return &GateError{Requests: sent, Err: held.err}
		}
		sent++
		var aerr *APIError
		if tok != nil && sent == 1 && errors.As(err, &aerr) && aerr.HTTPStatus == http.StatusUnauthorized {
			c.log.Info().Str("enterpriseId", t.creds.EnterpriseID).Msg("app token rejected; fetching a new one")
			t.tokens.invalidate(tok)
			continue
		}
		return err
	}
}

func (c *Client) tokenError(t *tenant, err error) error {
	var credErr *CredentialsError
	if errors.As(err, &credErr) {
		return err
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return &TransportError{Op: "token", Err: err}
	}
	var terr *TransportError
	if errors.As(err, &terr) {
		return &TransportError{Op: "token", Err: terr.Err} // the API call itself was not sent
	}
	return &TransportError{Op: "token", Err: err}
}

// do sends one signed request, bounded by the client's timeout.
func (c *Client) do(ctx context.Context, t *tenant, tok *appToken, method, path string, body []byte, out any, atWrite func() error) error {
	if c.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.timeout)
		defer cancel()
	}
	// A request refused at its write is cancelled, so that the transport
	// does not try it again on another connection.
	ctx, cancelRequest := context.WithCancel(ctx)
	defer cancelRequest()
	check := newWriteCheck(atWrite, cancelRequest)
	reqURL, headers := c.sign(t, tok, method, path, body)
	req, err := http.NewRequestWithContext(ctx, method, reqURL, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("xylink: build request: %w", redactURLError(err))
	}
	req.Header.Set("Content-Type", "application/json; charset=utf-8")
	req.Header.Set("Accept", "application/json")
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	var wrote bool
	var wroteMu sync.Mutex
	if err := check.now(); err != nil {
		return err // the connection is not even asked for: already too late
	}
	req = req.WithContext(httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{
		GotConn: check.arm,
		WroteRequest: func(info httptrace.WroteRequestInfo) {
			wroteMu.Lock()
			wrote = wrote || info.Err == nil
			wroteMu.Unlock()
		},
	}))
	start := c.now()
	resp, err := c.hc.Do(req)
	if err != nil {
		wroteMu.Lock()
		sent := wrote
		wroteMu.Unlock()
		if held := check.refused(); held != nil {
			return held // refused at its first write: nothing of it left
		}
		c.log.Debug().Str("enterpriseId", t.creds.EnterpriseID).Bool("sent", sent).Dur("took", c.now().Sub(start)).
			Err(redactURLError(err)).Msg("xylink call failed")
		return &TransportError{Op: "send", Sent: sent, Err: redactURLError(err)}
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, c.maxResp+1))
	if err != nil {
		return &TransportError{Op: "read response", Sent: true, Err: redactURLError(err)}
	}
	if int64(len(raw)) > c.maxResp {
		return &TransportError{Op: "read response", Sent: true, Err: ErrResponseTooLarge}
	}
	c.log.Debug().Str("enterpriseId", t.creds.EnterpriseID).Int("status", resp.StatusCode).
		Dur("took", c.now().Sub(start)).Msg("xylink call")
	if resp.StatusCode >= 300 && resp.StatusCode <= 399 {
		return redirectError(resp)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return decodeAPIError(resp.StatusCode, raw)
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			return &TransportError{Op: "decode response", Sent: true, Err: errors.New("the 2xx answer is not the documented JSON")}
		}
	}
	return nil
}

// isLoopback: a host on this machine (the sandbox, a local gateway), where
// plain http does not leave the host.
func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// redirectError names a redirect that was not followed and the host it points
// to (never the whole location, which may carry a signature).
func redirectError(resp *http.Response) error {
	where := "no location"
	if loc, err := resp.Location(); err == nil {
		where = loc.Scheme + "://" + loc.Host
	}
	return &APIError{HTTPStatus: resp.StatusCode, DeveloperMessage: fmt.Sprintf(
		"the API answered a redirect (HTTP %d, to %s); redirects are not followed: check XYLINK_BASE_URL", resp.StatusCode, where)}
}

func decodeAPIError(status int, raw []byte) error {
	e := &APIError{HTTPStatus: status}
	var b ErrorBody
	if json.Unmarshal(raw, &b) == nil {
		e.ErrorCode, e.UserMessage, e.DeveloperMessage, e.MoreInfo = b.ErrorCode, b.UserMessage, b.DeveloperMessage, b.MoreInfo
	} else {
		// A gateway's page may echo the request URL; never copy it into an error.
		e.DeveloperMessage = fmt.Sprintf("non-JSON error answer (%d bytes)", len(raw))
	}
	return e
}

// sign builds the request URL and headers for the tenant's signature scheme.
func (c *Client) sign(t *tenant, tok *appToken, method, path string, body []byte) (string, map[string]string) {
	urlPath := c.base.Path + apiRoot + path
	query := "enterpriseId=" + url.QueryEscape(t.creds.EnterpriseID)
	u := *c.base
	u.Path = urlPath
	if tok == nil {
		sig := SignV1(t.creds.Token.Reveal(), method, path, query, body)
		u.RawQuery = query + "&signature=" + escapeSignature(sig)
		return u.String(), nil
	}
	// XYLink's SDK keeps a literal signature=signature in 2.0 and signs it as part of the URI.
	u.RawQuery = query + "&signature=signature"
	ts := strconv.FormatInt(time.Now().UnixMilli(), 10)
	h := map[string]string{
		HeaderClientID:  t.creds.ClientID,
		HeaderSignType:  string(t.signType),
		HeaderTimestamp: ts,
		HeaderNonce:     nonce(ts),
	}
	h[HeaderSign] = SignV2(t.signType, tok.signSecret.Reveal(), method, h, u.EscapedPath()+"?"+u.RawQuery, body)
	h["Authorization"] = "Bearer " + tok.access.Reveal()
	return u.String(), h
}

// nonce is hex SHA-256 of the timestamp and 16 random characters, as the SDK does.
func nonce(ts string) string {
	var r [8]byte
	_, _ = rand.Read(r[:])
	sum := sha256.Sum256([]byte(ts + hex.EncodeToString(r[:])))
	return hex.EncodeToString(sum[:])
}

// fetchToken calls the app-token endpoint (refresh empty) or the refresh endpoint.
func (c *Client) fetchToken(ctx context.Context, cr Credentials, refresh Secret) (*appToken, error) {
	var path string
	var payload any
	if refresh == "" {
		path = AppTokenPath
		payload = map[string]any{"client_id": cr.ClientID, "client_secret": cr.ClientSecret.Reveal(),
			"enterpriseId": cr.EnterpriseID, "refresh_token": nil}
	} else {
		path = RefreshTokenPath
		payload = map[string]any{"client_id": cr.ClientID, "refresh_token": refresh.Reveal()}
	}
	body, _ := json.Marshal(payload)
	u := *c.base
	u.Path = c.base.Path + path
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u.String(), bytes.NewReader(body))
	if err != nil {
		return nil, &TransportError{Op: "token", Err: redactURLError(err)}
	}
	req.Header.Set("Content-Type", "application/json; charset=utf-8")
	start := c.now()
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, &TransportError{Op: "token", Err: redactURLError(err)}
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, c.maxResp+1))
	if err != nil || int64(len(raw)) > c.maxResp {
		return nil, &TransportError{Op: "token", Err: errors.New("token answer unreadable or too large")}
	}
	var ans tokenAnswer
	decodeErr := json.Unmarshal(raw, &ans)
	switch {
	case resp.StatusCode >= 500:
		return nil, &TransportError{Op: "token", Err: fmt.Errorf("token endpoint answered HTTP %d", resp.StatusCode)}
	case resp.StatusCode == http.StatusTooManyRequests:
		return nil, &APIError{HTTPStatus: resp.StatusCode, UserMessage: "token endpoint rate limited"}
	case resp.StatusCode >= 400 || (decodeErr == nil && !strings.EqualFold(ans.Message, "success")):
		reason := ans.Message
		if reason == "" {
			var eb ErrorBody
			if json.Unmarshal(raw, &eb) == nil && eb.UserMessage != "" {
				reason = eb.UserMessage
			} else {
				reason = "refused"
			}
		}
		if refresh != "" {
			reason = "refresh token " + reason
		}
		return nil, &CredentialsError{EnterpriseID: cr.EnterpriseID, HTTPStatus: resp.StatusCode, Reason: truncate(reason, 200)}
	case decodeErr != nil || ans.Data == nil || ans.Data.AccessToken == "" || ans.Data.ExpiresIn <= 0:
		return nil, &TransportError{Op: "token", Err: errors.New("token answer is not the documented JSON")}
	}
	life := time.Duration(ans.Data.ExpiresIn) * time.Second
	t := &appToken{access: ans.Data.AccessToken, refresh: ans.Data.RefreshToken, signSecret: ans.Data.SignSecret,
		expiresAt: start.Add(life)}
	t.refreshAt = t.expiresAt.Add(-refreshMargin(life))
	c.log.Info().Str("enterpriseId", cr.EnterpriseID).Bool("refreshed", refresh != "").Dur("expiresIn", life).
		Msg("xylink app token obtained")
	return t, nil
}
