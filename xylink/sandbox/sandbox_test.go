package sandbox_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/xygroup/xygroup/xylink"
	"github.com/xygroup/xygroup/xylink/sandbox"
)

func TestMaxInWindow(t *testing.T) {
	base := time.Unix(1000, 0)
	at := func(ms ...int) []time.Time {
		out := make([]time.Time, len(ms))
		for i, m := range ms {
			out[i] = base.Add(time.Duration(m) * time.Millisecond)
		}
		return out
	}
	cases := []struct {
		times []time.Time
		want  int
	}{
		{nil, 0},
		{at(0), 1},
		{at(0, 999), 2},
		{at(0, 1000), 1}, // a window is [t, t+1s)
		{at(900, 0, 500, 1400, 1499), 4},
		{at(0, 50, 100, 150, 1050, 1100), 4},
	}
	for i, c := range cases {
		if got := sandbox.MaxInWindow(c.times, time.Second); got != c.want {
			t.Errorf("case %d: MaxInWindow = %d, want %d", i, got, c.want)
		}
	}
}

func do(t *testing.T, method, url string, body any) (int, []byte) {
	t.Helper()
	var r io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		r = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, url, r)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, out
}

// The admin API as the README documents it, over real HTTP.
func TestAdminAPI(t *testing.T) {
	sb, err := sandbox.Start(sandbox.Config{Enterprises: []sandbox.Enterprise{{ID: "e1", Token: "t1"}}}, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer sb.Close(context.Background())
	c, _ := xylink.NewClient(sb.URL, xylink.WithTenants(xylink.Credentials{EnterpriseID: "e1", Token: "t1"}))
	ctx := context.Background()

	code, body := do(t, "POST", sb.URL+"/sandbox/meetings", map[string]any{"meetingRoomNumber": "910004217404", "startsIn": "1h", "maxGroups": 3})
	if code != 201 {
		t.Fatalf("create meeting: %d %s", code, body)
	}
	var m sandbox.Meeting
	_, body = do(t, "GET", sb.URL+"/sandbox/meetings/910004217404", nil)
	if err := json.Unmarshal(body, &m); err != nil || m.MaxGroups != 3 || m.State(time.Now()) != "waiting" || len(m.Participants) != 10 {
		t.Fatalf("meeting = %s", body)
	}
	if _, err := c.CreateGroups(ctx, "e1", &xylink.CreateGroupsRequest{MeetingRoomNumber: "910004217404"}); xylink.Classify(err).Class != xylink.ClassMeetingNotStarted {
		t.Fatalf("waiting meeting: %v", err)
	}
	if code, _ := do(t, "POST", sb.URL+"/sandbox/meetings/910004217404/start", nil); code != 200 {
		t.Fatal("start")
	}
	groups, err := c.CreateGroups(ctx, "e1", &xylink.CreateGroupsRequest{MeetingRoomNumber: "910004217404"})
	if err != nil || len(groups) != 2 { // ten participants, no groupCount: one group per five
		t.Fatalf("random without groupCount: %d groups, %v", len(groups), err)
	}
	if code, _ := do(t, "POST", sb.URL+"/sandbox/meetings/910004217404/close-groups", nil); code != 200 {
		t.Fatal("close-groups")
	}
	four := 4
	if _, err := c.CreateGroups(ctx, "e1", &xylink.CreateGroupsRequest{MeetingRoomNumber: "910004217404", GroupCount: &four}); xylink.Classify(err).Class != xylink.ClassTooManyGroups {
		t.Fatalf("maxGroups 3, asked 4: %v", err)
	}
	if code, body := do(t, "PUT", sb.URL+"/sandbox/faults", map[string]any{"errorRatio": 2}); code != 400 {
		t.Fatalf("errorRatio 2 accepted: %s", body)
	}
	if code, body := do(t, "PUT", sb.URL+"/sandbox/faults", map[string]any{"latency": "1ms", "errorRatio": 0}); code != 200 {
		t.Fatalf("faults: %s", body)
	}
	if code, body := do(t, "POST", sb.URL+"/sandbox/outages", map[string]any{"for": "1h"}); code != 201 {
		t.Fatalf("outage: %s", body)
	}
	if _, err := c.CreateGroups(ctx, "e1", &xylink.CreateGroupsRequest{MeetingRoomNumber: "1"}); xylink.Classify(err).Disposition != xylink.Retry {
		t.Fatalf("during outage: %v", err)
	}
	if code, _ := do(t, "DELETE", sb.URL+"/sandbox/outages", nil); code != 204 {
		t.Fatal("end outages")
	}
	if code, body := do(t, "POST", sb.URL+"/sandbox/outages", map[string]any{}); code != 400 {
		t.Fatalf("outage without a window accepted: %s", body)
	}
	var st sandbox.Stats
	_, body = do(t, "GET", sb.URL+"/sandbox/stats", nil)
	if err := json.Unmarshal(body, &st); err != nil || st.ByAnswer["66620"] != 1 || st.ByAnswer["200"] != 1 ||
		st.ByAnswer["66685"] != 1 || st.ByAnswer["503"] != 1 || st.Enterprises["e1"].MaxInWindow != 4 || st.Enterprises["e1"].Limit != 20 {
		t.Fatalf("stats = %s", body)
	}
	var reqs []sandbox.Request
	_, body = do(t, "GET", sb.URL+"/sandbox/requests?limit=2", nil)
	if err := json.Unmarshal(body, &reqs); err != nil || len(reqs) != 2 || reqs[1].Status != 503 || reqs[0].Signature != "1.0" {
		t.Fatalf("requests = %s", body)
	}
	if code, _ := do(t, "POST", sb.URL+"/sandbox/reset", nil); code != 204 {
		t.Fatal("reset")
	}
	if _, body = do(t, "GET", sb.URL+"/sandbox/stats", nil); json.Unmarshal(body, &st) != nil || st.Requests != 0 {
		t.Fatalf("after reset: %s", body)
	}
	if code, body := do(t, "POST", sb.URL+"/sandbox/meetings", map[string]any{"startsIn": "1h"}); code != 400 {
		t.Fatalf("meeting without number: %d %s", code, body)
	}
	if code, _ := do(t, "GET", sb.URL+"/nowhere", nil); code != 404 {
		t.Fatal("unknown path")
	}
}

// The limit applies per enterprise over any sliding second: the excess gets 429
// with an XYLink error body, and another enterprise is not affected.
func TestRateLimitPerEnterprise(t *testing.T) {
	sb, err := sandbox.Start(sandbox.Config{Rate: 4, Enterprises: []sandbox.Enterprise{{ID: "a", Token: "ta"}, {ID: "b", Token: "tb", Rate: 2}}}, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer sb.Close(context.Background())
	c, _ := xylink.NewClient(sb.URL, xylink.WithTenants(xylink.Credentials{EnterpriseID: "a", Token: "ta"}, xylink.Credentials{EnterpriseID: "b", Token: "tb"}))
	count := func(ent string, n int) (ok, limited int) {
		for i := range n {
			_, err := c.CreateGroups(context.Background(), ent, &xylink.CreateGroupsRequest{MeetingRoomNumber: ent + string(rune('0'+i))})
			var ae *xylink.APIError
			switch {
			case err == nil:
				ok++
			case xylink.Classify(err).Disposition == xylink.RateLimited && asAPI(err, &ae) && ae.ErrorCode == sandbox.CodeRateLimited:
				limited++
			default:
				t.Fatalf("%s: %v", ent, err)
			}
		}
		return
	}
	if ok, lim := count("a", 6); ok != 4 || lim != 2 {
		t.Fatalf("a: %d ok, %d limited", ok, lim)
	}
	if ok, lim := count("b", 3); ok != 2 || lim != 1 {
		t.Fatalf("b (rate 2): %d ok, %d limited", ok, lim)
	}
}

func asAPI(err error, target **xylink.APIError) bool {
	ae, ok := err.(*xylink.APIError)
	*target = ae
	return ok
}

// A fixed answer says whose it is: the meeting's own, or the sandbox's for
// every meeting.
func TestFixedAnswerSaysWhose(t *testing.T) {
	sb, err := sandbox.Start(sandbox.Config{Enterprises: []sandbox.Enterprise{{ID: "e1", Token: "t1"}}}, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer sb.Close(context.Background())
	api, _ := xylink.NewClient(sb.URL, xylink.WithTenants(xylink.Credentials{EnterpriseID: "e1", Token: "t1"}))
	two := 2
	create := func(meeting string) string {
		_, err := api.CreateGroups(context.Background(), "e1", &xylink.CreateGroupsRequest{MeetingRoomNumber: meeting, Mode: "random", GroupCount: &two})
		var ae *xylink.APIError
		if !errors.As(err, &ae) {
			t.Fatalf("%s: %v, want an API error", meeting, err)
		}
		return ae.DeveloperMessage
	}
	sb.SetFaults(sandbox.Faults{Fail: &sandbox.FixedAnswer{Status: 503}})
	if got := create("910000000001"); got != "fixed answer of every meeting (the sandbox's faults)" {
		t.Errorf("the sandbox's fault says %q", got)
	}
	if _, err := sb.AddMeeting(sandbox.MeetingSpec{Number: "910000000002", Fail: &sandbox.FixedAnswer{Status: 400, ErrorCode: 60001}}); err != nil {
		t.Fatal(err)
	}
	if got := create("910000000002"); got != "fixed answer of this meeting" {
		t.Errorf("a meeting's own fault says %q", got)
	}
}
