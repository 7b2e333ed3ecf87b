package worker_test

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/xygroup/xygroup/schemas"
	"github.com/xygroup/xygroup/worker"
	wt "github.com/xygroup/xygroup/worker/workertest"
	"github.com/xygroup/xygroup/xylink"
	"github.com/xygroup/xygroup/xylink/sandbox"
)

func manualReq(meeting string) *xylink.CreateGroupsRequest {
	return &xylink.CreateGroupsRequest{MeetingRoomNumber: meeting, Mode: xylink.ModeManual, GroupList: []xylink.GroupSpec{
		{GroupName: "g", MemberList: []xylink.MemberSpec{{ID: 1, Type: 5}}}}}
}

// Bad input ends as failed.invalid_command carrying the payload, and the worker
// keeps serving.
func TestBadInput(t *testing.T) {
	srv := wt.StartNATS(t)
	sb := wt.StartSandbox(t, sandbox.Config{Rate: 100000})
	wt.StartWorker(t, srv, wt.Client(t, sb))
	js := wt.JetStream(t, wt.Connect(t, srv))
	bad := map[string][]byte{
		"not-json":         []byte("create the groups please"),
		"invalid-utf8":     []byte("{\"meetingRoomNumber\":\"\xff\xfe\"}"),
		"wrong-types":      []byte(`{"meetingRoomNumber":910004217404,"groupCount":"two"}`),
		"oversize":         append([]byte(`{"meetingRoomNumber":"1","groupName":"`), append(bytes.Repeat([]byte("x"), worker.MaxCommandBytes), '"', '}')...),
		"unknown-tenant":   []byte(`{"enterpriseId":"nobody","meetingRoomNumber":"910004217404"}`),
		"empty":            {},
		"two-values":       []byte(`{"meetingRoomNumber":"1"} {"meetingRoomNumber":"2"}`),
		"duplicate-member": []byte(`{"meetingRoomNumber":"1","mode":"manual","groupList":[{"memberList":[{"id":7,"type":5}]},{"memberList":[{"id":7,"type":5}]}]}`),
	}
	for id, payload := range bad {
		wt.Publish(t, js, id, payload)
	}
	wt.Publish(t, js, "good-after", wt.Command("good-after", "m-good"))
	events := wt.AwaitTerminal(t, js, len(bad)+1, time.Minute)
	for id, payload := range bad {
		evs := events[id]
		if len(evs) != 1 || evs[0].Subject != worker.SubjectFailed+".invalid_command" {
			t.Errorf("%s: %d events on %v", id, len(evs), evs)
			continue
		}
		if err := schemas.Validate(schemas.Failed, evs[0].Data); err != nil {
			t.Errorf("%s: %v", id, err)
		}
		var f struct {
			Command  json.RawMessage `json:"command"`
			Encoding string          `json:"commandEncoding"`
			DevMsg   string          `json:"developerMessage"`
		}
		_ = json.Unmarshal(evs[0].Data, &f)
		var got []byte
		switch {
		case f.Encoding == "base64":
			var s string
			_ = json.Unmarshal(f.Command, &s)
			got, _ = base64.StdEncoding.DecodeString(s)
		case json.Valid(payload):
			got = f.Command
		default:
			var s string
			_ = json.Unmarshal(f.Command, &s)
			got = []byte(s)
		}
		if !bytes.Equal(got, payload) {
			t.Errorf("%s: command not carried as received: %.80q", id, got)
		}
		if f.DevMsg == "" {
			t.Errorf("%s: no reason", id)
		}
	}
	if evs := events["good-after"]; len(evs) != 1 || evs[0].Subject != worker.SubjectCreated {
		t.Fatalf("the worker stopped serving after bad input: %v", evs)
	}
	if !strings.Contains(string(events["unknown-tenant"][0].Data), "nobody") {
		t.Errorf("unknown tenant not named: %s", events["unknown-tenant"][0].Data)
	}
	if n := sb.Stats().Requests; n != 1 {
		t.Errorf("invalid commands reached the API: %d requests", n)
	}
}
