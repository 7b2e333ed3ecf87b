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

// A command's record keeps its failed event without the command it quotes, and
// the event published again for the same command is the event first
// published, byte for byte: whole, cut to a limit, in Base64 or as text.
func TestRecordKeepsTheFailedEventWithoutItsCommand(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	dec := &decoder{defaultEnterprise: "e1"}
	commands := map[string][]byte{
		"json":   []byte(`{"commandId":"c1","meetingRoomNumber":"m1","groupName":"` + strings.Repeat("<é", 60<<10) + `"}`),
		"text":   []byte(`not json ` + strings.Repeat("x", 150<<10)),
		"binary": append([]byte{0xff, 0xfe}, bytes.Repeat([]byte{0, 1, 2}, 70<<10)...),
	}
	for name, raw := range commands {
		for _, limit := range []int{EventsMaxMsgBytes, 64 << 10} {
			d := dec.decode(raw, nats.Header{}, StreamCommands, 7, time.Time{})
			f := failure{class: xylink.ClassInvalidCommand, userMessage: "u", developerMessage: "d"}
			if d.Invalid != nil {
				f.userMessage, f.developerMessage = d.Invalid.UserMessage, d.Invalid.DeveloperMessage
			}
			ev := failedEvent(d, f, 0, now)
			first, err := ev.natsMsg("test", "", now, limit)
			if err != nil {
				t.Fatal(err)
			}
			stored, err := storedFor(ev, first.Data)
			if err != nil {
				t.Fatal(err)
			}
			rec, err := marshalRecord(commandRecord{Attempts: 1, Terminal: stored, EventSeq: 42})
			if err != nil {
				t.Fatal(err)
			}
			if len(rec) > 8<<10 {
				t.Errorf("%s/%d: a record of %d bytes for a command of %d", name, limit, len(rec), len(raw))
			}
			if err := schemas.Validate(schemas.Failed, stored.Body); err != nil {
				t.Errorf("%s/%d: the record's event: %v", name, limit, err)
			}
			var back commandRecord
			if err := json.Unmarshal(rec, &back); err != nil {
				t.Fatal(err)
			}
			again, err := back.Terminal.repeatFor(dec.decode(raw, nats.Header{}, StreamCommands, 9, time.Time{})).natsMsg("test", "", now, limit)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(again.Data, first.Data) {
				t.Errorf("%s/%d: published again differently:\nfirst %.300s\nagain %.300s", name, limit, first.Data, again.Data)
			}
			if again.Header.Get(nats.MsgIdHdr) != first.Header.Get(nats.MsgIdHdr) {
				t.Errorf("%s/%d: Nats-Msg-Id %q, first %q", name, limit, again.Header.Get(nats.MsgIdHdr), first.Header.Get(nats.MsgIdHdr))
			}

			// Another command under the same id: the stored event, naming the
			// first command by its hash.
			other := dec.decode(append([]byte("x"), raw...), nats.Header{}, StreamCommands, 10, time.Time{})
			other.ID, other.EnterpriseID = d.ID, d.EnterpriseID
			m, err := back.Terminal.repeatFor(other).natsMsg("test", "", now, limit)
			if err != nil {
				t.Fatal(err)
			}
			var got FailedEvent
			if err := json.Unmarshal(m.Data, &got); err != nil {
				t.Fatal(err)
			}
			sum := sha256.Sum256(raw)
			if !got.CommandTruncated || got.CommandSHA256 != hex.EncodeToString(sum[:]) || string(got.Command) != `""` {
				t.Errorf("%s/%d: another command's repeat: truncated %v, sha256 %q, command %.40s", name, limit, got.CommandTruncated, got.CommandSHA256, got.Command)
			}
		}
	}
}

// A record written before commands were left out (the command inside its
// event, no eventSeq) is published again as stored.
func TestOldRecordIsPublishedAgainAsStored(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	raw := []byte(`{"commandId":"c1","meetingRoomNumber":"m1"}`)
	d := (&decoder{defaultEnterprise: "e1"}).decode(raw, nats.Header{}, StreamCommands, 7, time.Time{})
	ev := failedEvent(d, failure{class: xylink.ClassRejected, userMessage: "u", developerMessage: "d"}, 1, now)
	first, err := ev.natsMsg("test", "", now, EventsMaxMsgBytes)
	if err != nil {
		t.Fatal(err)
	}
	old := []byte(`{"attempts":1,"terminal":{"subject":"` + ev.subject + `","ceType":"` + ev.ceType + `","msgId":"` + ev.msgID +
		`","eventId":"` + ev.eventID + `","body":` + string(first.Data) + `}}`)
	var rec commandRecord
	if err := json.Unmarshal(old, &rec); err != nil {
		t.Fatal(err)
	}
	if rec.EventSeq != 0 || rec.Terminal.CommandOmitted {
		t.Fatalf("old record read as %+v", rec)
	}
	again, err := rec.Terminal.repeatFor(d).natsMsg("test", "", now, EventsMaxMsgBytes)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(again.Data, first.Data) {
		t.Fatalf("published again differently:\nfirst %s\nagain %s", first.Data, again.Data)
	}
}
