package worker

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/xygroup/xygroup/schemas"
	"github.com/xygroup/xygroup/xylink"
)

// Every event, whatever it carries, is shaped to the payload limit it is given,
// stays valid against its schema, and says what it left out.
func TestEventsFitTheLimit(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	const limit = 64 << 10
	huge := strings.Repeat("<", 200<<10)
	d := &Decoded{ID: "c1", EnterpriseID: "e1", MeetingRoomNumber: "m1", Raw: []byte(`{"groupName":"` + huge + `"`)}

	var members []xylink.Member
	for i := range 5000 {
		members = append(members, xylink.Member{ID: int64(i + 1), Type: 5, ParticipantNumber: "18961782725"})
	}
	groups := []xylink.Group{{GroupNo: "g1", GroupName: "分组1", MemberList: members}, {GroupNo: "g2", GroupName: "分组2", MemberList: members}}

	cases := []struct {
		name   string
		ev     *outEvent
		schema string
	}{
		{"failed, large command and messages", failedEvent(d, failure{class: xylink.ClassRejected, userMessage: huge, developerMessage: huge}, 1, now), schemas.Failed},
		{"created, many members", createdEvent(d, groups, false, 1, now), schemas.Created},
		{"failed, published before under a larger limit", storedAgain(t, failedEvent(d, failure{class: xylink.ClassInvalidCommand, userMessage: "u", developerMessage: "d"}, 0, now), 1<<30), schemas.Failed},
		{"failed, cut before under a larger limit", storedAgain(t, failedEvent(d, failure{class: xylink.ClassInvalidCommand, userMessage: "u", developerMessage: "d"}, 0, now), 128<<10), schemas.Failed},
		{"created, published before under a larger limit", storedAgain(t, createdEvent(d, groups, false, 1, now), 1<<30), schemas.Created},
	}
	for _, c := range cases {
		for _, lim := range []int{limit, 0} {
			m, err := c.ev.natsMsg("test", strings.Repeat("t", 1<<20), now, lim)
			if err != nil {
				t.Fatalf("%s (limit %d): %v", c.name, lim, err)
			}
			if size := len(m.Data) + headerLen(m.Header); lim > 0 && (size > lim || storedLen(m.Data)+headerLen(m.Header) > lim) {
				t.Errorf("%s: %d bytes with headers, more than %d", c.name, size, lim)
			}
			if m.Header.Get("traceparent") != "" {
				t.Errorf("%s: an oversized traceparent carried over", c.name)
			}
			if err := schemas.Validate(c.schema, m.Data); err != nil {
				t.Errorf("%s: %v", c.name, err)
			}
			var f struct {
				Command          json.RawMessage `json:"command"`
				CommandEncoding  string          `json:"commandEncoding"`
				CommandTruncated bool            `json:"commandTruncated"`
				CommandSHA256    string          `json:"commandSha256"`
				MembersOmitted   bool            `json:"membersOmitted"`
				UserMessage      string          `json:"userMessage"`
			}
			if err := json.Unmarshal(m.Data, &f); err != nil {
				t.Fatal(err)
			}
			switch c.schema {
			case schemas.Failed:
				sum := sha256.Sum256(d.Raw)
				kept := (&FailedEvent{Command: f.Command, CommandEncoding: f.CommandEncoding}).original()
				if !f.CommandTruncated || f.CommandSHA256 != hex.EncodeToString(sum[:]) || !bytes.HasPrefix(d.Raw, kept) {
					t.Errorf("%s: command cut without its hash, or not to a prefix: %v %q", c.name, f.CommandTruncated, f.CommandSHA256)
				}
				if lim > 0 && len(kept) < limit/4 {
					t.Errorf("%s: only %d bytes of the command kept within %d", c.name, len(kept), lim)
				}
				if len(f.UserMessage) > maxMessageBytes {
					t.Errorf("%s: userMessage of %d bytes", c.name, len(f.UserMessage))
				}
			case schemas.Created:
				if !f.MembersOmitted {
					t.Errorf("%s: members not said to be omitted", c.name)
				}
			}
		}
	}

	// An event that fits is left as it is.
	small := failedEvent(d, failure{class: xylink.ClassRejected, userMessage: "u", developerMessage: "d"}, 1, now)
	small.body.(*FailedEvent).raw = []byte(`{"meetingRoomNumber":"m1"}`)
	small.body.(*FailedEvent).Command = json.RawMessage(`{"meetingRoomNumber":"m1"}`)
	m, err := small.natsMsg("test", "", now, limit)
	if err != nil || !bytes.Contains(m.Data, []byte(`"command":{"meetingRoomNumber":"m1"}`)) || bytes.Contains(m.Data, []byte("commandTruncated")) {
		t.Errorf("a small event was changed: %s %v", m.Data, err)
	}
}

// storedAgain is the event, published under limit, as the idempotency record
// gives it back.
func storedAgain(t *testing.T, ev *outEvent, limit int) *outEvent {
	t.Helper()
	m, err := ev.natsMsg("test", "", time.Now(), limit)
	if err != nil {
		t.Fatal(err)
	}
	rec, _ := json.Marshal(storedEvent{Subject: ev.subject, CEType: ev.ceType, MsgID: ev.msgID, EventID: ev.eventID, Body: m.Data})
	var back storedEvent
	if err := json.Unmarshal(rec, &back); err != nil {
		t.Fatal(err)
	}
	return back.outEvent()
}

// Long ids from headers are replaced by their hash, the same every time.
func TestLongIDsAreBounded(t *testing.T) {
	d := &decoder{defaultEnterprise: "e1"}
	long := strings.Repeat("i", 100<<10)
	h := nats.Header{}
	h.Set(nats.MsgIdHdr, long)
	a, b := d.decode([]byte(`{}`), h, "S", 1, time.Time{}), d.decode([]byte(`{}`), h, "S", 2, time.Time{})
	if a.ID != b.ID || len(a.ID) > maxIDBytes || !strings.HasPrefix(a.ID, "sha256:") {
		t.Errorf("ids %q and %q", a.ID, b.ID)
	}
	a.ReplayID = long
	if id := terminalID(a); len(id) > 2*maxIDBytes {
		t.Errorf("terminal msg id of %d bytes", len(id))
	}
}

func TestCutJSONString(t *testing.T) {
	for _, s := range []string{"", "short", strings.Repeat("<", 10000), strings.Repeat("分", 10000), strings.Repeat("\x01\"\\", 5000), "\xff\xfe" + strings.Repeat("a", 10000)} {
		got := cutJSONString(s, 1000)
		enc, _ := json.Marshal(got)
		if len(enc) > 1000 {
			t.Errorf("%.10q…: %d bytes as JSON", s, len(enc))
		}
		if len(s) < 100 && got != s {
			t.Errorf("%q cut to %q", s, got)
		}
		if len(enc) < 900 && got != s {
			t.Errorf("%.10q…: cut to %d bytes only", s, len(enc))
		}
	}
}
