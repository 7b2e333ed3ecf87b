// Package sandbox is a stand-in for XYLink's breakout-group API, faithful enough to
// test a client end to end without an enterprise account.
//
// It serves dynamicGroup and the signature 2.0 token endpoints, verifies every
// signature and token (HTTP 401 with an XYLink error body otherwise), keeps
// meetings (in progress by default; scheduled, ended, with participants and a
// maximum group count through the admin API), answers 66620, 66684 and 66685 like
// the platform, enforces a per-enterprise rate over sliding one-second windows
// (HTTP 429), injects latency, 5xx answers and outages, and records every request
// with its arrival time so that tests can check the rate the API actually saw.
//
// Error codes for signatures, tokens, rate limits and injected faults are the
// sandbox's own (the platform's are not public); the HTTP statuses are what a
// client should rely on.
package sandbox

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"hash/fnv"
	"math"
	mrand "math/rand/v2"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/xygroup/xygroup/xylink"
)

// Error codes the sandbox uses where the platform's are not public.
const (
	CodeBadRequest        = 40001
	CodeBadSignature      = 40101
	CodeBadToken          = 40102
	CodeUnknownEnterprise = 40103
	CodeBadClient         = 40104
	CodeRateLimited       = 42901
	CodeInternal          = 50001
	CodeUnavailable       = 50301
)

// Enterprise is one tenant the sandbox accepts. Token enables signature 1.0;
// ClientID and ClientSecret enable signature 2.0. Rate 0 means Config.Rate.
type Enterprise struct {
	ID           string  `json:"enterpriseId"`
	Token        string  `json:"-"`
	ClientID     string  `json:"clientId,omitempty"`
	ClientSecret string  `json:"-"`
	Rate         float64 `json:"rate,omitempty"`
}

// Config sets up a sandbox.
type Config struct {
	Enterprises []Enterprise
	// Rate is each enterprise's limit in requests per sliding second (default 20).
	Rate float64
	// TokenTTL is the lifetime of a 2.0 access token (default 2 h, at least 1 s).
	TokenTTL time.Duration
	// MaxGroups is a meeting's default maximum group count (default 50).
	MaxGroups int
	// Faults to start with.
	Faults Faults
	Logger zerolog.Logger
}

// Faults injected into dynamicGroup answers.
type Faults struct {
	// Latency delays each answer after the request was processed, so a client
	// that times out does not know that its request took effect.
	Latency Duration `json:"latency"`
	// ErrorRatio of requests (0..1) answer HTTP 500 without being processed.
	ErrorRatio float64 `json:"errorRatio"`
	// Outages: windows in which requests answer HTTP 503 without being processed.
	Outages []Outage `json:"outages,omitempty"`
	// Fail makes every authentic create answer this failure (a meeting's own
	// Fail takes precedence).
	Fail *FixedAnswer `json:"fail,omitempty"`
}

// Outage is a window of unavailability, for one enterprise or (empty) all.
type Outage struct {
	EnterpriseID string    `json:"enterpriseId,omitempty"`
	From         time.Time `json:"from"`
	Until        time.Time `json:"until"`
}

// Sandbox is the API stand-in. Use Handler to serve it, or Start.
type Sandbox struct {
	log       zerolog.Logger
	rate      float64
	tokenTTL  time.Duration
	maxGroups int

	mu          sync.Mutex
	enterprises map[string]*Enterprise
	clients     map[string]*Enterprise // by client id
	tokens      map[string]*issuedToken
	refresh     map[string]*issuedToken
	meetings    map[string]*Meeting
	faults      Faults
	// delaying counts answers held in the injected latency right now.
	delaying    int
	admitted    map[string][]time.Time // per enterprise, admitted arrivals of the last second
	requests    []Request
	tokenIssues int
	rng         *mrand.Rand
}

type issuedToken struct {
	enterprise *Enterprise
	access     string
	refresh    string
	signSecret string
	expiresAt  time.Time
}

// New returns a sandbox.
func New(cfg Config) *Sandbox {
	if cfg.Rate <= 0 {
		cfg.Rate = 20
	}
	if cfg.TokenTTL < time.Second {
		if cfg.TokenTTL == 0 {
			cfg.TokenTTL = 2 * time.Hour
		} else {
			cfg.TokenTTL = time.Second
		}
	}
	if cfg.MaxGroups <= 0 {
		cfg.MaxGroups = 50
	}
	s := &Sandbox{
		log: cfg.Logger, rate: cfg.Rate, tokenTTL: cfg.TokenTTL, maxGroups: cfg.MaxGroups,
		enterprises: map[string]*Enterprise{}, clients: map[string]*Enterprise{},
		tokens: map[string]*issuedToken{}, refresh: map[string]*issuedToken{},
		meetings: map[string]*Meeting{}, faults: cfg.Faults, admitted: map[string][]time.Time{},
		rng: mrand.New(mrand.NewPCG(uint64(time.Now().UnixNano()), 0x5eed)),
	}
	for _, e := range cfg.Enterprises {
		s.AddEnterprise(e)
	}
	return s
}

// AddEnterprise adds or replaces a tenant.
func (s *Sandbox) AddEnterprise(e Enterprise) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ent := e
	s.enterprises[e.ID] = &ent
	if e.ClientID != "" {
		s.clients[e.ClientID] = &ent
	}
}

// Handler serves the API and the admin API (under /sandbox/).
func (s *Sandbox) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /api/rest/external/v1/"+xylink.DynamicGroupPath, s.handleDynamicGroup)
	mux.HandleFunc("POST "+xylink.AppTokenPath, s.handleAppToken)
	mux.HandleFunc("POST "+xylink.RefreshTokenPath, s.handleRefreshToken)
	s.adminRoutes(mux)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, CodeBadRequest, "error.not.found", "no such endpoint in the sandbox")
	})
	return sameOrigin(mux)
}

// sameOrigin refuses requests that a web page of another origin sent: a
// browser names the page's origin on every cross-site POST, PUT or DELETE, so
// a page on the internet cannot reset the sandbox or change its meetings and
// faults through a developer's browser. Clients that are no browser (curl, the
// worker, tests) send no Origin and are served.
func sameOrigin(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if origin := r.Header.Get("Origin"); origin != "" {
			if u, err := url.Parse(origin); err != nil || u.Host != r.Host {
				writeError(w, http.StatusForbidden, CodeBadRequest, "error.forbidden.origin",
					"requests from another origin are refused")
				return
			}
		}
		if r.Header.Get("Sec-Fetch-Site") == "cross-site" {
			writeError(w, http.StatusForbidden, CodeBadRequest, "error.forbidden.origin", "cross-site requests are refused")
			return
		}
		next.ServeHTTP(w, r)
	})
}

// Meeting is a cloud meeting room's state in the sandbox.
type Meeting struct {
	Number       string         `json:"meetingRoomNumber"`
	EnterpriseID string         `json:"enterpriseId,omitempty"`
	StartsAt     time.Time      `json:"startsAt"`
	EndedAt      *time.Time     `json:"endedAt,omitempty"`
	MaxGroups    int            `json:"maxGroups"`
	Participants []Participant  `json:"participants"`
	Groups       []xylink.Group `json:"groups,omitempty"`
	// Creates counts successful group creations: with one command per meeting, a
	// second create means a command was sent twice.
	Creates int `json:"creates"`
	// Answers counts answers by key (see Stats.ByAnswer).
	Answers map[string]int `json:"answers"`
	// Fail, when set, is answered to every create.
	Fail *FixedAnswer `json:"fail,omitempty"`
	// FirstSuccessAt is when groups were first created.
	FirstSuccessAt *time.Time `json:"firstSuccessAt,omitempty"`
}

// Participant is a device in a meeting.
type Participant struct {
	ID                int64  `json:"id"`
	Type              int    `json:"type"`
	ParticipantNumber string `json:"participantNumber"`
}

// State is "waiting" (not started), "in_progress" or "ended".
func (m *Meeting) State(now time.Time) string {
	switch {
	case m.EndedAt != nil && !now.Before(*m.EndedAt):
		return "ended"
	case now.Before(m.StartsAt):
		return "waiting"
	}
	return "in_progress"
}

// meeting returns the meeting, creating an in-progress one with generated
// participants for a number never seen (the platform's rooms exist already).
// Callers hold s.mu.
func (s *Sandbox) meeting(number string, now time.Time) *Meeting {
	if m, ok := s.meetings[number]; ok {
		return m
	}
	m := &Meeting{Number: number, StartsAt: now, MaxGroups: s.maxGroups, Participants: generatedParticipants(number, 10),
		Answers: map[string]int{}}
	s.meetings[number] = m
	return m
}

func generatedParticipants(number string, n int) []Participant {
	h := fnv.New32a()
	h.Write([]byte(number))
	base := int64(h.Sum32()%900000) + 100000000
	out := make([]Participant, n)
	for i := range out {
		out[i] = Participant{ID: base + int64(i), Type: 5, ParticipantNumber: fmt.Sprintf("189%08d", (base+int64(i))%100000000)}
	}
	return out
}

// Duration is a time.Duration that reads and writes JSON as "250ms".
type Duration time.Duration

func (d Duration) MarshalJSON() ([]byte, error) {
	return []byte(`"` + time.Duration(d).String() + `"`), nil
}

func (d *Duration) UnmarshalJSON(b []byte) error {
	s := strings.Trim(string(b), `"`)
	if s == "" || s == "null" {
		*d = 0
		return nil
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("duration %q: %w", s, err)
	}
	*d = Duration(v)
	return nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// admit applies the rate limit over a sliding second: it answers false when the
// enterprise already had floor(rate) admitted requests in the last second.
// Callers hold s.mu.
func (s *Sandbox) admit(enterpriseID string, now time.Time) bool {
	limit := s.rate
	if e := s.enterprises[enterpriseID]; e != nil && e.Rate > 0 {
		limit = e.Rate
	}
	window := s.admitted[enterpriseID]
	cut := 0
	for cut < len(window) && now.Sub(window[cut]) >= time.Second {
		cut++
	}
	window = window[cut:]
	if len(window) >= int(math.Floor(limit)) {
		s.admitted[enterpriseID] = window
		return false
	}
	s.admitted[enterpriseID] = append(window, now)
	return true
}

// MaxInWindow is the largest number of times in any window [t, t+width): the
// figure a rate limit must keep at or below its limit.
func MaxInWindow(times []time.Time, width time.Duration) int {
	ts := append([]time.Time(nil), times...)
	sort.Slice(ts, func(i, j int) bool { return ts[i].Before(ts[j]) })
	best, j := 0, 0
	for i := range ts {
		for ts[i].Sub(ts[j]) >= width {
			j++
		}
		best = max(best, i-j+1)
	}
	return best
}
