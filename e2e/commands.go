package e2e

import (
	"encoding/json"
	"fmt"
	"strings"
)

// Command is a command the suite publishes and the outcome it expects.
type Command struct {
	ID      string
	Payload []byte
	// Enterprise and Meeting are what the command names; the events must carry
	// them (the default tenant when Enterprise is empty).
	Enterprise string
	Meeting    string
	// Want is the expected terminal outcome: "created" or "failed.<class>".
	Want string
}

// NewCommand is a valid random-mode command for a meeting.
func NewCommand(id, enterprise, meeting string) Command {
	body := map[string]any{"commandId": id, "meetingRoomNumber": meeting, "mode": "random", "groupCount": 2}
	if enterprise != "" {
		body["enterpriseId"] = enterprise
	}
	b, _ := json.Marshal(body)
	return Command{ID: id, Payload: b, Enterprise: enterprise, Meeting: meeting, Want: "created"}
}

// Commands makes n valid commands, each for a meeting of its own.
func Commands(prefix, enterprise string, n int) []Command {
	out := make([]Command, n)
	for i := range out {
		id := fmt.Sprintf("%s-%04d", prefix, i)
		out[i] = NewCommand(id, enterprise, meetingNumber(prefix, i))
	}
	return out
}

// meetingNumber is a meeting room number unique to a prefix and index.
func meetingNumber(prefix string, i int) string {
	h := uint32(2166136261)
	for _, c := range []byte(prefix) {
		h = (h ^ uint32(c)) * 16777619
	}
	return fmt.Sprintf("9%05d%06d", h%100000, i)
}

// IDs are the commands' ids.
func IDs(cmds []Command) []string {
	out := make([]string, len(cmds))
	for i, c := range cmds {
		out[i] = c.ID
	}
	return out
}

// BadCommands makes invalid commands of every kind the suite knows, n of each
// kind at most, each naming its meeting (where it can) so that the failed event
// must carry it.
func BadCommands(prefix string, n int) []Command {
	var out []Command
	add := func(kind string, i int, meeting string, payload []byte) {
		out = append(out, Command{ID: fmt.Sprintf("%s-%s-%03d", prefix, kind, i), Payload: payload, Meeting: meeting,
			Want: "failed.invalid_command"})
	}
	for i := range n {
		m := meetingNumber(prefix+"-bad", i)
		id := func(kind string) string { return fmt.Sprintf("%s-%s-%03d", prefix, kind, i) }
		// 200 KiB of U+0001 inside a string: six bytes each once escaped.
		add("ctl200k", i, m, fmt.Appendf(nil, `{"commandId":%q,"meetingRoomNumber":%q,"mode":"random","groupCount":2,"groupName":"%s"}`,
			id("ctl200k"), m, strings.Repeat("\x01", 200<<10)))
		// 180 KiB of '<': escaped by a Go JSON encoder as \u003c.
		add("lt180k", i, m, fmt.Appendf(nil, `{"commandId":%q,"meetingRoomNumber":%q,"mode":"random","groupCount":2,"groupName":%q}`,
			id("lt180k"), m, strings.Repeat("<", 180<<10)))
		// escaped control characters, more than groupName's 64.
		add("ctlesc", i, m, fmt.Appendf(nil, `{"commandId":%q,"meetingRoomNumber":%q,"mode":"random","groupCount":2,"groupName":"%s"}`,
			id("ctlesc"), m, strings.Repeat(`\u0001\u001b`, 50)))
		// raw control bytes inside a string: not JSON.
		add("ctlraw", i, m, fmt.Appendf(nil, `{"commandId":%q,"meetingRoomNumber":%q,"mode":"random","groupCount":2,"groupName":"a`+"\x07\x00"+`b"}`,
			id("ctlraw"), m))
		// bytes that are not UTF-8.
		add("utf8", i, m, fmt.Appendf(nil, `{"commandId":%q,"meetingRoomNumber":%q,"mode":"random","groupCount":2,"groupName":"`+"\xff\xfe\xc3"+` bad"}`,
			id("utf8"), m))
		// a number given as a string, a mode the API does not have, not JSON at all.
		add("types", i, m, fmt.Appendf(nil, `{"commandId":%q,"meetingRoomNumber":%q,"mode":"random","groupCount":"two"}`,
			id("types"), m))
		add("mode", i, m, fmt.Appendf(nil, `{"commandId":%q,"meetingRoomNumber":%q,"mode":"sideways","groupCount":2}`,
			id("mode"), m))
		add("notjson", i, "", fmt.Appendf(nil, `this is not json %d`, i))
	}
	return out
}
