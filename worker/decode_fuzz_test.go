package worker

import (
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/xygroup/xygroup/schemas"
)

// FuzzDecode: whatever bytes arrive, decoding does not panic, gives exactly one of
// a command or a reason, and the event the worker would publish for an invalid
// command is valid against the failed-event schema.
// Seeds live in testdata/fuzz/FuzzDecode; CI runs a short fuzzing pass.
func FuzzDecode(f *testing.F) {
	for _, s := range []string{
		`{"meetingRoomNumber":"910004217404"}`,
		`{"commandId":"a","meetingRoomNumber":"1","mode":"manual","groupList":[{"groupName":"分组1","memberList":[{"id":1,"type":5}]}]}`,
		`{"meetingRoomNumber":"1","notBefore":"2026-11-25T10:00:00Z","deadline":"2026-11-25T09:00:00Z"}`,
		"\xff\xfe", `[]`, `null`, `{"meetingRoomNumber":1e400}`,
	} {
		f.Add([]byte(s))
	}
	d := &decoder{defaultEnterprise: "e1", hasTenant: func(id string) bool { return id == "e1" }}
	now := time.Unix(1_800_000_000, 0)
	f.Fuzz(func(t *testing.T, raw []byte) {
		out := d.decode(raw, nats.Header{}, "S", 7, time.Time{})
		if (out.Cmd == nil) == (out.Invalid == nil) {
			t.Fatalf("decode(%q): command %v, invalid %v", raw, out.Cmd, out.Invalid)
		}
		if out.ID == "" {
			t.Fatalf("decode(%q): no command id", raw)
		}
		if out.Invalid != nil {
			ev := failedEvent(out, failure{class: "invalid_command", userMessage: out.Invalid.UserMessage,
				developerMessage: out.Invalid.DeveloperMessage}, 0, now)
			body, err := marshalEvent(ev.body)
			if err != nil {
				t.Fatalf("decode(%q): event: %v", raw, err)
			}
			if err := schemas.Validate(schemas.Failed, body); err != nil {
				t.Fatalf("decode(%q): event against schema: %v\n%s", raw, err, body)
			}
			return
		}
		if err := out.Cmd.CreateGroupsRequest.Validate(); err != nil {
			t.Fatalf("decode(%q) accepted a request the client refuses: %v", raw, err)
		}
	})
}
