package schemas_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io/fs"
	"os"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/xygroup/xygroup/schemas"
)

// exampleCommand is a command shown somewhere a user may copy it from.
type exampleCommand struct {
	where, body, meeting string
}

// collectCommands adds every command in v (a decoded JSON document): an
// object with a commandId and a meetingRoomNumber that is not an event; the
// command quoted inside a failed event counts too.
func collectCommands(v any, where string, found map[string][]exampleCommand) {
	switch v := v.(type) {
	case map[string]any:
		id, hasID := v["commandId"].(string)
		meeting, hasMeeting := v["meetingRoomNumber"].(string)
		_, isEvent := v["eventId"]
		if hasID && hasMeeting && !isEvent {
			body, _ := json.Marshal(v) // map keys sorted: one text per body
			tenant, _ := v["enterpriseId"].(string)
			key := tenant + "/" + id // the idempotency record is per tenant
			found[key] = append(found[key], exampleCommand{where: where, body: string(body), meeting: meeting})
		}
		for _, c := range v {
			collectCommands(c, where, found)
		}
	case []any:
		for _, c := range v {
			collectCommands(c, where, found)
		}
	}
}

// readmeJSON finds the JSON objects in the README's code blocks: each '{'
// that starts a whole JSON value on its line (a shell-quoted argument, a
// line of a json block).
func readmeJSON(t *testing.T) map[string]any {
	t.Helper()
	raw, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]any{}
	inBlock := false
	for i, line := range strings.Split(string(raw), "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), "```") {
			inBlock = !inBlock
			continue
		}
		if !inBlock {
			continue
		}
		for at := strings.IndexByte(line, '{'); at >= 0; at = nextBrace(line, at) {
			var v any
			if json.NewDecoder(strings.NewReader(line[at:])).Decode(&v) == nil {
				out["README.md:"+itoa(i+1)] = v
				break
			}
		}
	}
	return out
}

func nextBrace(line string, after int) int {
	if i := strings.IndexByte(line[after+1:], '{'); i >= 0 {
		return after + 1 + i
	}
	return -1
}

func itoa(n int) string { b, _ := json.Marshal(n); return string(b) }

// No two example commands (the README's code blocks, schemas/examples, the
// AsyncAPI document's examples) share an id with different bodies: publishing
// one would silently return the other's result (the commands stream drops it
// as a duplicate).
func TestExampleCommandIDsAreTheirs(t *testing.T) {
	found := exampleCommands(t)
	for key, cmds := range found {
		for _, c := range cmds[1:] {
			if c.body != cmds[0].body {
				t.Errorf("commandId %s: %s and %s differ:\n%s\n%s", strings.TrimPrefix(key, "/"), cmds[0].where, c.where, cmds[0].body, c.body)
			}
		}
	}
}

// No two example commands create groups in one meeting: published one after
// the other (the quickstart, then the examples), the second would fail as
// already_open, the first one's groups being open.
func TestExampleCommandsHaveTheirOwnMeetings(t *testing.T) {
	byMeeting := map[string]map[string]string{} // tenant/meeting: commandId: where
	for key, cmds := range exampleCommands(t) {
		tenant, id, _ := strings.Cut(key, "/")
		m := tenant + "/" + cmds[0].meeting
		if byMeeting[m] == nil {
			byMeeting[m] = map[string]string{}
		}
		byMeeting[m][id] = cmds[0].where
	}
	for m, ids := range byMeeting {
		if len(ids) > 1 {
			t.Errorf("meeting %s: %d example commands create groups in it: %v", strings.TrimPrefix(m, "/"), len(ids), ids)
		}
	}
}

// exampleCommands finds the example commands by tenant/commandId.
func exampleCommands(t *testing.T) map[string][]exampleCommand {
	t.Helper()
	found := map[string][]exampleCommand{}
	docs := readmeJSON(t)
	readme := 0
	for where, v := range docs {
		before := len(found)
		collectCommands(v, where, found)
		readme += len(found) - before
	}
	if readme == 0 {
		t.Fatal("no command found in the README's code blocks")
	}
	files, _ := fs.Glob(schemas.Files, "examples/*")
	for _, f := range files {
		raw, _ := schemas.Files.ReadFile(f)
		if strings.HasSuffix(f, ".ndjson") {
			sc := bufio.NewScanner(bytes.NewReader(raw))
			for n := 1; sc.Scan(); n++ {
				var v any
				if err := json.Unmarshal(sc.Bytes(), &v); err != nil {
					t.Fatalf("%s:%d: %v", f, n, err)
				}
				collectCommands(v, "schemas/"+f+":"+itoa(n), found)
			}
			continue
		}
		var v any
		if err := json.Unmarshal(raw, &v); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		collectCommands(v, "schemas/"+f, found)
	}
	raw, _ := schemas.Files.ReadFile("asyncapi.yaml")
	var doc any
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	collectCommands(doc, "schemas/asyncapi.yaml", found)
	return found
}
