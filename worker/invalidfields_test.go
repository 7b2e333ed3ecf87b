package worker_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/xygroup/xygroup/schemas"
	"github.com/xygroup/xygroup/worker"
	wt "github.com/xygroup/xygroup/worker/workertest"
	"github.com/xygroup/xygroup/xylink/sandbox"
)

// A command that cannot be sent still names its command, meeting and enterprise
// (the default one when it names none) in its failed event, whatever else is
// wrong with it, so that consumers filtering on them see it.
func TestInvalidCommandKeepsItsFields(t *testing.T) {
	srv := wt.StartNATS(t)
	sb := wt.StartSandbox(t, sandbox.Config{Rate: 100000})
	wt.StartWorker(t, srv, wt.Client(t, sb))
	js := wt.JetStream(t, wt.Connect(t, srv))

	type want struct{ commandID, meeting, enterprise string }
	cases := []struct {
		name    string
		payload string
		want    want
	}{
		{"wrong type elsewhere", `{"commandId":"c-types","meetingRoomNumber":"m-types","groupCount":"two"}`,
			want{"c-types", "m-types", wt.Enterprise}},
		{"unknown field", `{"commandId":"c-unknown","meetingRoomNumber":"m-unknown","dedline":"2026-01-01T00:00:00Z"}`,
			want{"c-unknown", "m-unknown", wt.Enterprise}},
		{"too many groups", `{"commandId":"c-groups","meetingRoomNumber":"m-groups","mode":"random","groupCount":101}`,
			want{"c-groups", "m-groups", wt.Enterprise}},
		{"manual without groupList", `{"commandId":"c-nolist","meetingRoomNumber":"m-nolist","mode":"manual"}`,
			want{"c-nolist", "m-nolist", wt.Enterprise}},
		{"bad mode", `{"commandId":"c-mode","meetingRoomNumber":"m-mode","mode":"auto"}`,
			want{"c-mode", "m-mode", wt.Enterprise}},
		{"meeting as a number", `{"commandId":"c-number","meetingRoomNumber":910004217404,"mode":"random"}`,
			want{"c-number", "910004217404", wt.Enterprise}},
		{"meeting as a large number", `{"commandId":"c-bignumber","meetingRoomNumber":91000421740412345678901234567890}`,
			want{"c-bignumber", "91000421740412345678901234567890", wt.Enterprise}},
		{"enterprise and a wrong type", `{"commandId":"c-ent","enterpriseId":"other-enterprise","meetingRoomNumber":"m-ent","groupCount":0}`,
			want{"c-ent", "m-ent", "other-enterprise"}},
		{"unknown enterprise", `{"commandId":"c-tenant","enterpriseId":"nobody","meetingRoomNumber":"m-tenant"}`,
			want{"c-tenant", "m-tenant", "nobody"}},
		{"duplicate member", `{"commandId":"c-dup","meetingRoomNumber":"m-dup","mode":"manual","groupList":[{"memberList":[{"id":7,"type":5}]},{"memberList":[{"id":7,"type":5}]}]}`,
			want{"c-dup", "m-dup", wt.Enterprise}},
		{"deadline before notBefore", `{"commandId":"c-dl","meetingRoomNumber":"m-dl","notBefore":"2030-01-02T00:00:00Z","deadline":"2030-01-01T00:00:00Z"}`,
			want{"c-dl", "m-dl", wt.Enterprise}},
		{"bad deadline", `{"commandId":"c-baddl","meetingRoomNumber":"m-baddl","deadline":"tomorrow"}`,
			want{"c-baddl", "m-baddl", wt.Enterprise}},
		{"meeting with a space", `{"commandId":"c-space","meetingRoomNumber":"m space"}`,
			want{"c-space", "m space", wt.Enterprise}},
		{"commandId as a number", `{"commandId":4242,"meetingRoomNumber":"m-idnum","groupCount":"x"}`,
			want{"4242", "m-idnum", wt.Enterprise}},
		{"trailing data", `{"commandId":"c-two","meetingRoomNumber":"m-two"} {"meetingRoomNumber":"other"}`,
			want{"c-two", "m-two", wt.Enterprise}},
		{"raw control characters in a string", "{\"commandId\":\"c-ctl\",\"meetingRoomNumber\":\"m-ctl\",\"groupName\":\"a\x07\x00\nb\"}",
			want{"c-ctl", "m-ctl", wt.Enterprise}},
		{"not UTF-8 elsewhere", "{\"commandId\":\"c-utf8\",\"meetingRoomNumber\":\"m-utf8\",\"groupName\":\"\xff\xfe\"}",
			want{"c-utf8", "m-utf8", wt.Enterprise}},
		{"larger than the command limit", `{"commandId":"c-large","meetingRoomNumber":"m-large","groupName":"` + strings.Repeat("x", worker.MaxCommandBytes) + `"}`,
			want{"c-large", "m-large", wt.Enterprise}},
		{"empty enterprise", `{"commandId":"c-noent","enterpriseId":"","meetingRoomNumber":"m-noent"}`,
			want{"c-noent", "m-noent", wt.Enterprise}},
		{"an array", `[{"commandId":"c-array","meetingRoomNumber":"m-array"}]`,
			want{"hdr-an array", "", wt.Enterprise}},
	}
	for _, c := range cases {
		wt.Publish(t, js, "hdr-"+c.name, []byte(c.payload))
	}
	events := wt.AwaitTerminal(t, js, len(cases), time.Minute)
	wrong := 0
	for _, c := range cases {
		evs := events[c.want.commandID]
		if len(evs) != 1 || evs[0].Subject != worker.SubjectFailed+".invalid_command" {
			t.Errorf("%s: %d events under commandId %q", c.name, len(evs), c.want.commandID)
			wrong++
			continue
		}
		if err := schemas.Validate(schemas.Failed, evs[0].Data); err != nil {
			t.Errorf("%s: %v", c.name, err)
		}
		f := evs[0].Fields
		got := want{fmt.Sprint(f["commandId"]), fmt.Sprint(f["meetingRoomNumber"]), fmt.Sprint(f["enterpriseId"])}
		if got != c.want {
			t.Errorf("%s: event names %+v, want %+v", c.name, got, c.want)
			wrong++
		}
	}
	if wrong > 0 {
		t.Errorf("%d of %d invalid commands lost fields in their event", wrong, len(cases))
	}
}
