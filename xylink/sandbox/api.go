package sandbox

import (
	"crypto/hmac"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/xygroup/xygroup/xylink"
)

// Request is one recorded API request.
type Request struct {
	At           time.Time `json:"at"`
	Endpoint     string    `json:"endpoint"` // "dynamicGroup", "app_token", "refresh_token"
	EnterpriseID string    `json:"enterpriseId,omitempty"`
	Meeting      string    `json:"meetingRoomNumber,omitempty"`
	Signature    string    `json:"signature,omitempty"` // "1.0" or "2.0"
	Status       int       `json:"status"`
	ErrorCode    int       `json:"errorCode,omitempty"`
}

// answerKey names an answer in stats: the business errorCode for 6xxxx answers,
// else the HTTP status.
func (r Request) answerKey() string {
	if r.ErrorCode >= 60000 {
		return strconv.Itoa(r.ErrorCode)
	}
	return strconv.Itoa(r.Status)
}

const maxBody = 1 << 20

func (s *Sandbox) handleDynamicGroup(w http.ResponseWriter, r *http.Request) {
	arrived := time.Now()
	enterpriseID := r.URL.Query().Get("enterpriseId")
	rec := Request{At: arrived, Endpoint: "dynamicGroup", EnterpriseID: enterpriseID}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
	var req xylink.CreateGroupsRequest
	if err == nil && len(body) <= maxBody {
		if json.Unmarshal(body, &req) == nil {
			rec.Meeting = req.MeetingRoomNumber
		}
	}
	status, code, answer, latency := s.dynamicGroup(r, &rec, enterpriseID, body, err, &req, arrived)
	// Latency comes after processing: a client that gives up does not learn that
	// its request took effect, as with the real platform.
	if latency > 0 {
		s.mu.Lock()
		s.delaying++
		s.mu.Unlock()
		select {
		case <-time.After(latency):
		case <-r.Context().Done():
		}
		s.mu.Lock()
		s.delaying--
		s.mu.Unlock()
	}
	rec.Status, rec.ErrorCode = status, code
	s.record(rec)
	writeJSON(w, status, answer)
}

// dynamicGroup decides the answer; it holds s.mu for the whole decision so that
// meetings and the rate window change atomically.
func (s *Sandbox) dynamicGroup(r *http.Request, rec *Request, enterpriseID string, body []byte, readErr error,
	req *xylink.CreateGroupsRequest, now time.Time) (int, int, any, time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	latency := time.Duration(s.faults.Latency)
	fail := func(status, code int, user, dev string) (int, int, any, time.Duration) {
		return status, code, errorBody(code, user, dev), latency
	}
	if !s.admit(enterpriseID, now) {
		return fail(http.StatusTooManyRequests, CodeRateLimited, "error.rate.limited",
			fmt.Sprintf("more than %g requests in one second", s.limit(enterpriseID)))
	}
	for _, o := range s.faults.Outages {
		if (o.EnterpriseID == "" || o.EnterpriseID == enterpriseID) && !now.Before(o.From) && now.Before(o.Until) {
			return fail(http.StatusServiceUnavailable, CodeUnavailable, "error.service.unavailable", "sandbox outage")
		}
	}
	if s.faults.ErrorRatio > 0 && s.rng.Float64() < s.faults.ErrorRatio {
		return fail(http.StatusInternalServerError, CodeInternal, "error.internal", "injected server error")
	}
	ent := s.enterprises[enterpriseID]
	if ent == nil {
		return fail(http.StatusUnauthorized, CodeUnknownEnterprise, "error.enterprise.unknown", "unknown enterpriseId")
	}
	if readErr != nil || len(body) > maxBody {
		return fail(http.StatusBadRequest, CodeBadRequest, "error.bad.request", "body unreadable or larger than 1 MiB")
	}
	if code, user := s.authenticate(r, ent, body, now, rec); code != 0 {
		return fail(http.StatusUnauthorized, code, user, "signature or token rejected")
	}
	if problem := checkBody(body, req); problem != "" {
		return fail(http.StatusBadRequest, CodeBadRequest, "error.bad.request", problem)
	}
	m := s.meeting(req.MeetingRoomNumber, now)
	answer := func(status, code int, v any) (int, int, any, time.Duration) {
		rec := Request{Status: status, ErrorCode: code}
		m.Answers[rec.answerKey()]++
		return status, code, v, latency
	}
	f, whose := m.Fail, "fixed answer of this meeting"
	if f == nil {
		f, whose = s.faults.Fail, "fixed answer of every meeting (the sandbox's faults)"
	}
	if f != nil {
		user := f.UserMessage
		if user == "" {
			user = "error.sandbox.fixed"
		}
		return answer(f.Status, f.ErrorCode, errorBody(f.ErrorCode, user, whose))
	}
	if m.State(now) != "in_progress" {
		return answer(http.StatusBadRequest, xylink.CodeNoMeeting, errorBody(xylink.CodeNoMeeting, "error.no.meeting", ""))
	}
	if len(m.Groups) > 0 {
		return answer(http.StatusBadRequest, xylink.CodeAlreadyOpen, errorBody(xylink.CodeAlreadyOpen, "error.group.discussion.opened", ""))
	}
	groups := s.makeGroups(m, req)
	if len(groups) > m.MaxGroups {
		return answer(http.StatusBadRequest, xylink.CodeTooManyGroups, errorBody(xylink.CodeTooManyGroups, "error.group.count.exceed", ""))
	}
	m.Groups = groups
	m.Creates++
	if m.FirstSuccessAt == nil {
		t := now
		m.FirstSuccessAt = &t
	}
	return answer(http.StatusOK, 0, groups)
}

func (s *Sandbox) limit(enterpriseID string) float64 {
	if e := s.enterprises[enterpriseID]; e != nil && e.Rate > 0 {
		return e.Rate
	}
	return s.rate
}

// checkBody applies the API's stated rules; the platform answers a bad body with 400.
func checkBody(body []byte, req *xylink.CreateGroupsRequest) string {
	if err := json.Unmarshal(body, req); err != nil {
		return "body is not the documented JSON"
	}
	if req.MeetingRoomNumber == "" {
		return "meetingRoomNumber is required"
	}
	if req.Mode != "" && req.Mode != xylink.ModeRandom && req.Mode != xylink.ModeManual {
		return "mode must be random or manual"
	}
	if req.Mode == xylink.ModeManual && len(req.GroupList) == 0 {
		return "groupList is required in manual mode"
	}
	if req.GroupCount != nil && *req.GroupCount < 1 {
		return "groupCount must be positive"
	}
	return ""
}

// makeGroups builds the answer: manual mode takes the named members, random mode
// deals the meeting's participants round-robin into groupCount groups (without
// groupCount, one group per five attendees).
func (s *Sandbox) makeGroups(m *Meeting, req *xylink.CreateGroupsRequest) []xylink.Group {
	if req.Mode == xylink.ModeManual {
		out := make([]xylink.Group, len(req.GroupList))
		for i, g := range req.GroupList {
			name := g.GroupName
			if name == "" {
				name = fmt.Sprintf("分组%d", i+1)
			}
			out[i] = xylink.Group{GroupNo: "mms" + randomHex(16), GroupName: name, MemberList: []xylink.Member{}}
			for _, mem := range g.MemberList {
				num := mem.ParticipantNumber
				if num == "" {
					num = m.participantNumber(mem.ID)
				}
				out[i].MemberList = append(out[i].MemberList, xylink.Member{ID: mem.ID, Type: mem.Type,
					ParticipantNumber: num, CanSetAdmin: true})
			}
		}
		return out
	}
	n := (len(m.Participants) + 4) / 5
	if req.GroupCount != nil {
		n = *req.GroupCount
	}
	n = max(n, 1)
	out := make([]xylink.Group, n)
	for i := range out {
		name := req.GroupName
		switch {
		case name == "":
			name = fmt.Sprintf("分组%d", i+1)
		case n > 1:
			name = fmt.Sprintf("%s%d", name, i+1)
		}
		out[i] = xylink.Group{GroupNo: "mms" + randomHex(16), GroupName: name, MemberList: []xylink.Member{}}
	}
	if n > len(m.Participants) && n > 0 {
		return out // more groups than people: the count decides 66685 first
	}
	for i, p := range m.Participants {
		g := &out[i%n]
		g.MemberList = append(g.MemberList, xylink.Member{ID: p.ID, Type: p.Type, ParticipantNumber: p.ParticipantNumber, CanSetAdmin: true})
	}
	return out
}

func (m *Meeting) participantNumber(id int64) string {
	for _, p := range m.Participants {
		if p.ID == id {
			return p.ParticipantNumber
		}
	}
	return ""
}

// authenticate verifies signature 1.0 or 2.0; it returns a sandbox error code and
// message, or 0 when the request is authentic.
func (s *Sandbox) authenticate(r *http.Request, ent *Enterprise, body []byte, now time.Time, rec *Request) (int, string) {
	if r.Header.Get(xylink.HeaderSign) != "" || r.Header.Get("Authorization") != "" {
		rec.Signature = "2.0"
		return s.authenticateV2(r, ent, body, now)
	}
	rec.Signature = "1.0"
	if ent.Token == "" {
		return CodeBadSignature, "error.signature.invalid"
	}
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil || q.Get("signature") == "" {
		return CodeBadSignature, "error.signature.missing"
	}
	want := xylink.SignV1(ent.Token, r.Method, xylink.SigningPath(r.URL.Path), r.URL.RawQuery, body)
	if !hmac.Equal([]byte(want), []byte(q.Get("signature"))) {
		return CodeBadSignature, "error.signature.invalid"
	}
	return 0, ""
}

func (s *Sandbox) authenticateV2(r *http.Request, ent *Enterprise, body []byte, now time.Time) (int, string) {
	bearer, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	tok := s.tokens[bearer]
	if !ok || tok == nil || tok.enterprise.ID != ent.ID {
		return CodeBadToken, "error.token.invalid"
	}
	if !now.Before(tok.expiresAt) {
		return CodeBadToken, "error.token.expired"
	}
	if r.Header.Get(xylink.HeaderClientID) != ent.ClientID {
		return CodeBadClient, "error.client.invalid"
	}
	st, err := xylink.ParseSignType(r.Header.Get(xylink.HeaderSignType))
	if err != nil {
		return CodeBadSignature, "error.signtype.invalid"
	}
	ms, err := strconv.ParseInt(r.Header.Get(xylink.HeaderTimestamp), 10, 64)
	if err != nil || now.Sub(time.UnixMilli(ms)).Abs() > 5*time.Minute {
		return CodeBadSignature, "error.timestamp.invalid"
	}
	if r.Header.Get(xylink.HeaderNonce) == "" {
		return CodeBadSignature, "error.nonce.missing"
	}
	headers := map[string]string{}
	for name, vals := range r.Header {
		if l := strings.ToLower(name); strings.HasPrefix(l, "x-xy-") && len(vals) > 0 {
			headers[l] = vals[0]
		}
	}
	want := xylink.SignV2(st, tok.signSecret, r.Method, headers, r.RequestURI, body)
	if !hmac.Equal([]byte(want), []byte(r.Header.Get(xylink.HeaderSign))) {
		return CodeBadSignature, "error.signature.invalid"
	}
	return 0, ""
}

func (s *Sandbox) handleAppToken(w http.ResponseWriter, r *http.Request) {
	var in struct {
		ClientID     string `json:"client_id"`
		ClientSecret string `json:"client_secret"`
		EnterpriseID string `json:"enterpriseId"`
	}
	rec := Request{At: time.Now(), Endpoint: "app_token"}
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<16)).Decode(&in); err != nil {
		rec.Status = http.StatusBadRequest
		s.record(rec)
		writeJSON(w, http.StatusBadRequest, map[string]any{"message": "bad request"})
		return
	}
	rec.EnterpriseID = in.EnterpriseID
	s.mu.Lock()
	ent := s.clients[in.ClientID]
	ok := ent != nil && hmac.Equal([]byte(ent.ClientSecret), []byte(in.ClientSecret)) &&
		(in.EnterpriseID == "" || in.EnterpriseID == ent.ID)
	var tok *issuedToken
	if ok {
		tok = s.issue(ent, rec.At)
	}
	s.mu.Unlock()
	if !ok {
		rec.Status = http.StatusUnauthorized
		s.record(rec)
		writeJSON(w, http.StatusUnauthorized, map[string]any{"message": "invalid client"})
		return
	}
	rec.Status = http.StatusOK
	s.record(rec)
	writeJSON(w, http.StatusOK, s.tokenAnswer(tok))
}

func (s *Sandbox) handleRefreshToken(w http.ResponseWriter, r *http.Request) {
	var in struct {
		ClientID     string `json:"client_id"`
		RefreshToken string `json:"refresh_token"`
	}
	rec := Request{At: time.Now(), Endpoint: "refresh_token"}
	_ = json.NewDecoder(io.LimitReader(r.Body, 1<<16)).Decode(&in)
	s.mu.Lock()
	old := s.refresh[in.RefreshToken]
	var tok *issuedToken
	if old != nil && old.enterprise.ClientID == in.ClientID {
		delete(s.refresh, in.RefreshToken)
		delete(s.tokens, old.access) // a refreshed token replaces the old one
		tok = s.issue(old.enterprise, rec.At)
		rec.EnterpriseID = old.enterprise.ID
	}
	s.mu.Unlock()
	if tok == nil {
		rec.Status = http.StatusUnauthorized
		s.record(rec)
		writeJSON(w, http.StatusUnauthorized, map[string]any{"message": "invalid refresh token"})
		return
	}
	rec.Status = http.StatusOK
	s.record(rec)
	writeJSON(w, http.StatusOK, s.tokenAnswer(tok))
}

// issue makes a token; callers hold s.mu.
func (s *Sandbox) issue(ent *Enterprise, now time.Time) *issuedToken {
	t := &issuedToken{enterprise: ent, access: randomHex(16), refresh: randomHex(16), signSecret: randomHex(16),
		expiresAt: now.Add(s.tokenTTL)}
	s.tokens[t.access] = t
	s.refresh[t.refresh] = t
	s.tokenIssues++
	return t
}

func (s *Sandbox) tokenAnswer(t *issuedToken) map[string]any {
	return map[string]any{"message": "success", "data": map[string]any{
		"access_token": t.access, "refresh_token": t.refresh, "signSecret": t.signSecret,
		"expires_in": int64(s.tokenTTL / time.Second)}}
}

func (s *Sandbox) record(r Request) {
	s.mu.Lock()
	s.requests = append(s.requests, r)
	s.mu.Unlock()
	s.log.Debug().Str("endpoint", r.Endpoint).Str("enterpriseId", r.EnterpriseID).Str("meetingRoomNumber", r.Meeting).
		Int("status", r.Status).Int("errorCode", r.ErrorCode).Msg("sandbox request")
}

func errorBody(code int, user, dev string) xylink.ErrorBody {
	return xylink.ErrorBody{ErrorCode: code, UserMessage: user, DeveloperMessage: dev,
		MoreInfo: fmt.Sprintf("http://www.com.ainemo.com/errors/%d", code)}
}

func writeError(w http.ResponseWriter, status, code int, user, dev string) {
	writeJSON(w, status, errorBody(code, user, dev))
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(v)
}
