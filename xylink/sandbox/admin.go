package sandbox

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strconv"
	"time"
)

// The admin API, under /sandbox/ (JSON in and out):
//
//	GET    /sandbox/stats                    counts by answer, per-enterprise largest sliding-second window
//	GET    /sandbox/requests?limit=N         recorded requests, oldest first (the last N)
//	POST   /sandbox/meetings                 create or replace a meeting (MeetingSpec)
//	GET    /sandbox/meetings                 all meetings
//	GET    /sandbox/meetings/{number}        one meeting
//	POST   /sandbox/meetings/{number}/start  start now
//	POST   /sandbox/meetings/{number}/end    end now (its groups close)
//	POST   /sandbox/meetings/{number}/close-groups
//	DELETE /sandbox/meetings/{number}        forget it (the number is in progress again)
//	GET    /sandbox/faults, PUT /sandbox/faults   latency, errorRatio, outages
//	POST   /sandbox/outages                  {"enterpriseId": "", "for": "20s"} or {"from": ..., "until": ...}
//	DELETE /sandbox/outages                  end every outage
//	POST   /sandbox/tokens/expire            expire every issued 2.0 access token
//	POST   /sandbox/reset                    forget requests, meetings, faults and tokens
func (s *Sandbox) adminRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /sandbox/stats", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, 200, s.Stats()) })
	mux.HandleFunc("GET /sandbox/requests", s.handleRequests)
	mux.HandleFunc("POST /sandbox/meetings", s.handleCreateMeeting)
	mux.HandleFunc("GET /sandbox/meetings", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, 200, s.Meetings()) })
	mux.HandleFunc("GET /sandbox/meetings/{number}", func(w http.ResponseWriter, r *http.Request) {
		m, ok := s.Meeting(r.PathValue("number"))
		if !ok {
			adminError(w, http.StatusNotFound, "no such meeting")
			return
		}
		writeJSON(w, 200, m)
	})
	mux.HandleFunc("POST /sandbox/meetings/{number}/start", s.meetingAction(func(m *Meeting, now time.Time) {
		m.StartsAt = now
		m.EndedAt = nil
	}))
	mux.HandleFunc("POST /sandbox/meetings/{number}/end", s.meetingAction(func(m *Meeting, now time.Time) {
		m.EndedAt = &now
		m.Groups = nil
	}))
	mux.HandleFunc("POST /sandbox/meetings/{number}/close-groups", s.meetingAction(func(m *Meeting, _ time.Time) { m.Groups = nil }))
	mux.HandleFunc("DELETE /sandbox/meetings/{number}", func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		delete(s.meetings, r.PathValue("number"))
		s.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("GET /sandbox/faults", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, 200, s.Faults()) })
	mux.HandleFunc("PUT /sandbox/faults", func(w http.ResponseWriter, r *http.Request) {
		var f Faults
		if !decodeAdmin(w, r, &f) {
			return
		}
		if f.ErrorRatio < 0 || f.ErrorRatio > 1 || f.Latency < 0 || (f.Fail != nil && (f.Fail.Status < 400 || f.Fail.Status > 599)) {
			adminError(w, http.StatusBadRequest, "errorRatio must be within 0..1, latency not negative, fail.status 4xx or 5xx")
			return
		}
		s.SetFaults(f)
		writeJSON(w, 200, s.Faults())
	})
	mux.HandleFunc("POST /sandbox/outages", func(w http.ResponseWriter, r *http.Request) {
		var in struct {
			EnterpriseID string    `json:"enterpriseId"`
			For          Duration  `json:"for"`
			From         time.Time `json:"from"`
			Until        time.Time `json:"until"`
		}
		if !decodeAdmin(w, r, &in) {
			return
		}
		o := Outage{EnterpriseID: in.EnterpriseID, From: in.From, Until: in.Until}
		if in.For > 0 {
			o.From, o.Until = time.Now(), time.Now().Add(time.Duration(in.For))
		}
		if o.Until.IsZero() || !o.Until.After(o.From) {
			adminError(w, http.StatusBadRequest, `give "for" (a duration) or "from" and "until" (RFC 3339, until after from)`)
			return
		}
		s.AddOutage(o)
		writeJSON(w, http.StatusCreated, o)
	})
	mux.HandleFunc("DELETE /sandbox/outages", func(w http.ResponseWriter, r *http.Request) {
		s.ClearOutages()
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("POST /sandbox/tokens/expire", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 200, map[string]int{"expired": s.ExpireTokens()})
	})
	mux.HandleFunc("POST /sandbox/reset", func(w http.ResponseWriter, r *http.Request) {
		s.Reset()
		w.WriteHeader(http.StatusNoContent)
	})
}

// MeetingSpec creates a meeting through the admin API or AddMeeting.
type MeetingSpec struct {
	Number       string `json:"meetingRoomNumber"`
	EnterpriseID string `json:"enterpriseId,omitempty"`
	// StartsAt (RFC 3339) or StartsIn (a duration from now); neither: in progress.
	StartsAt  time.Time `json:"startsAt,omitzero"`
	StartsIn  Duration  `json:"startsIn,omitempty"`
	MaxGroups int       `json:"maxGroups,omitempty"`
	// Participants for random mode; empty: ten generated ones.
	Participants []Participant `json:"participants,omitempty"`
	// Fail makes every create in this meeting answer this failure, e.g.
	// {"status": 400, "errorCode": 60001} or {"status": 503}.
	Fail *FixedAnswer `json:"fail,omitempty"`
}

// FixedAnswer is a failure a meeting answers to every create.
type FixedAnswer struct {
	Status      int    `json:"status"`
	ErrorCode   int    `json:"errorCode,omitempty"`
	UserMessage string `json:"userMessage,omitempty"`
}

// AddMeeting creates or replaces a meeting.
func (s *Sandbox) AddMeeting(spec MeetingSpec) (Meeting, error) {
	if spec.Number == "" {
		return Meeting{}, fmt.Errorf("meetingRoomNumber is required")
	}
	now := time.Now()
	m := &Meeting{Number: spec.Number, EnterpriseID: spec.EnterpriseID, StartsAt: now, MaxGroups: spec.MaxGroups,
		Participants: spec.Participants, Answers: map[string]int{}, Fail: spec.Fail}
	if spec.Fail != nil && (spec.Fail.Status < 400 || spec.Fail.Status > 599) {
		return Meeting{}, fmt.Errorf("fail.status must be an HTTP error status (4xx or 5xx)")
	}
	switch {
	case spec.StartsIn > 0:
		m.StartsAt = now.Add(time.Duration(spec.StartsIn))
	case !spec.StartsAt.IsZero():
		m.StartsAt = spec.StartsAt
	}
	if m.MaxGroups <= 0 {
		m.MaxGroups = s.maxGroups
	}
	if len(m.Participants) == 0 {
		m.Participants = generatedParticipants(spec.Number, 10)
	}
	s.mu.Lock()
	s.meetings[spec.Number] = m
	out := m.snapshot()
	s.mu.Unlock()
	return out, nil
}

func (s *Sandbox) handleCreateMeeting(w http.ResponseWriter, r *http.Request) {
	var spec MeetingSpec
	if !decodeAdmin(w, r, &spec) {
		return
	}
	m, err := s.AddMeeting(spec)
	if err != nil {
		adminError(w, http.StatusBadRequest, err.Error())
		return
	}
	writeJSON(w, http.StatusCreated, m)
}

func (s *Sandbox) meetingAction(f func(m *Meeting, now time.Time)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		now := time.Now()
		s.mu.Lock()
		m := s.meeting(r.PathValue("number"), now)
		f(m, now)
		out := m.snapshot()
		s.mu.Unlock()
		writeJSON(w, 200, out)
	}
}

// StartMeeting starts a meeting now.
func (s *Sandbox) StartMeeting(number string) {
	now := time.Now()
	s.mu.Lock()
	m := s.meeting(number, now)
	m.StartsAt, m.EndedAt = now, nil
	s.mu.Unlock()
}

// EndMeeting ends a meeting now; its groups close.
func (s *Sandbox) EndMeeting(number string) {
	now := time.Now()
	s.mu.Lock()
	m := s.meeting(number, now)
	m.EndedAt, m.Groups = &now, nil
	s.mu.Unlock()
}

// Meeting returns a copy of a meeting's state.
func (s *Sandbox) Meeting(number string) (Meeting, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m, ok := s.meetings[number]
	if !ok {
		return Meeting{}, false
	}
	return m.snapshot(), true
}

// Meetings returns copies of all meetings, by number.
func (s *Sandbox) Meetings() []Meeting {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Meeting, 0, len(s.meetings))
	for _, m := range s.meetings {
		out = append(out, m.snapshot())
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Number < out[j].Number })
	return out
}

// snapshot copies a meeting; callers hold s.mu.
func (m *Meeting) snapshot() Meeting {
	c := *m
	c.Participants = append([]Participant(nil), m.Participants...)
	c.Groups = append(c.Groups[:0:0], m.Groups...)
	c.Answers = make(map[string]int, len(m.Answers))
	for k, v := range m.Answers {
		c.Answers[k] = v
	}
	return c
}

// SetFaults replaces the injected faults.
func (s *Sandbox) SetFaults(f Faults) {
	s.mu.Lock()
	s.faults = f
	s.mu.Unlock()
}

// Faults returns the injected faults.
func (s *Sandbox) Faults() Faults {
	s.mu.Lock()
	defer s.mu.Unlock()
	f := s.faults
	f.Outages = append([]Outage(nil), f.Outages...)
	return f
}

// AddOutage adds an outage window.
func (s *Sandbox) AddOutage(o Outage) {
	s.mu.Lock()
	s.faults.Outages = append(s.faults.Outages, o)
	s.mu.Unlock()
}

// ClearOutages ends every outage now.
func (s *Sandbox) ClearOutages() {
	s.mu.Lock()
	s.faults.Outages = nil
	s.mu.Unlock()
}

// ExpireTokens expires every issued access token (refresh tokens stay valid) and
// returns how many there were.
func (s *Sandbox) ExpireTokens() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	for _, t := range s.tokens {
		t.expiresAt = now
	}
	return len(s.tokens)
}

// Reset forgets requests, meetings, faults, tokens and rate windows.
func (s *Sandbox) Reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.requests = nil
	s.meetings = map[string]*Meeting{}
	s.faults = Faults{}
	s.tokens = map[string]*issuedToken{}
	s.refresh = map[string]*issuedToken{}
	s.admitted = map[string][]time.Time{}
	s.tokenIssues = 0
}

// Requests returns the recorded requests, oldest first.
func (s *Sandbox) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Request(nil), s.requests...)
}

func (s *Sandbox) handleRequests(w http.ResponseWriter, r *http.Request) {
	reqs := s.Requests()
	if l := r.URL.Query().Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 0 {
			adminError(w, http.StatusBadRequest, "limit must be a whole number")
			return
		}
		if n < len(reqs) {
			reqs = reqs[len(reqs)-n:]
		}
	}
	writeJSON(w, 200, reqs)
}

// Stats summarises what the sandbox saw.
type Stats struct {
	Requests int `json:"requests"`
	// ByAnswer counts dynamicGroup answers: "200", business codes such as
	// "66620", and HTTP statuses such as "429", "401", "500", "503".
	ByAnswer    map[string]int             `json:"byAnswer"`
	Enterprises map[string]EnterpriseStats `json:"enterprises"`
	// TokenIssues counts 2.0 tokens issued (app_token and refresh).
	TokenIssues int `json:"tokenIssues"`
	// DuplicateCreates lists meetings with more than one successful create.
	DuplicateCreates []string `json:"duplicateCreates"`
	// Delaying counts dynamicGroup requests processed and held in the
	// injected latency now: their effect is done, their answer not yet sent.
	Delaying int `json:"delaying"`
}

// EnterpriseStats is one enterprise's traffic at dynamicGroup.
type EnterpriseStats struct {
	Requests int `json:"requests"`
	Created  int `json:"created"`
	// MaxInWindow is the largest number of requests that arrived in any sliding
	// one-second window, whatever their answer.
	MaxInWindow int     `json:"maxInWindow"`
	Limit       float64 `json:"limit"`
}

// Stats computes the summary.
func (s *Sandbox) Stats() Stats {
	s.mu.Lock()
	reqs := append([]Request(nil), s.requests...)
	st := Stats{ByAnswer: map[string]int{}, Enterprises: map[string]EnterpriseStats{}, TokenIssues: s.tokenIssues,
		DuplicateCreates: []string{}, Delaying: s.delaying}
	for _, m := range s.meetings {
		if m.Creates > 1 {
			st.DuplicateCreates = append(st.DuplicateCreates, m.Number)
		}
	}
	limits := map[string]float64{}
	for id := range s.enterprises {
		limits[id] = s.limit(id)
	}
	s.mu.Unlock()
	sort.Strings(st.DuplicateCreates)
	arrivals := map[string][]time.Time{}
	for _, r := range reqs {
		st.Requests++
		if r.Endpoint != "dynamicGroup" {
			continue
		}
		st.ByAnswer[r.answerKey()]++
		arrivals[r.EnterpriseID] = append(arrivals[r.EnterpriseID], r.At)
		e := st.Enterprises[r.EnterpriseID]
		e.Requests++
		if r.Status == http.StatusOK {
			e.Created++
		}
		st.Enterprises[r.EnterpriseID] = e
	}
	for id, ts := range arrivals {
		e := st.Enterprises[id]
		e.MaxInWindow = MaxInWindow(ts, time.Second)
		e.Limit = limits[id]
		st.Enterprises[id] = e
	}
	return st
}

func decodeAdmin(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(io.LimitReader(r.Body, 1<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		adminError(w, http.StatusBadRequest, "bad JSON: "+err.Error())
		return false
	}
	return true
}

func adminError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]string{"error": msg})
}
