package commands_test

import (
	"strings"
	"testing"

	"github.com/xygroup/xygroup/worker/commands"
)

func TestParseForms(t *testing.T) {
	cases := map[string]struct {
		in  string
		n   int
		ids []string
	}{
		"object":      {"\n\n{\"commandId\":\"a\",\n \"meetingRoomNumber\":\"1\"}\n", 1, []string{"a"}},
		"array":       {"[\n {\"commandId\":\"a\",\"meetingRoomNumber\":\"1\"},\n {\"commandId\":\"b\",\"meetingRoomNumber\":\"2\"}\n]", 2, []string{"a", "b"}},
		"ndjson":      {"{\"commandId\":\"a\",\"meetingRoomNumber\":\"1\"}\n\n{\"meetingRoomNumber\":\"2\"}\n", 2, []string{"a", ""}},
		"empty":       {"  \n", 0, nil},
		"empty array": {"[]", 0, nil},
	}
	for name, c := range cases {
		items, err := commands.Parse(strings.NewReader(c.in), name)
		if err != nil || len(items) != c.n {
			t.Fatalf("%s: %d items, %v", name, len(items), err)
		}
		for i, it := range items {
			if it.Err != nil || it.ID != c.ids[i] {
				t.Errorf("%s[%d]: id %q err %v", name, i, it.ID, it.Err)
			}
		}
	}
	items, _ := commands.Parse(strings.NewReader("[\n {\"meetingRoomNumber\":\"1\"},\n\n {\"meetingRoomNumber\":2}\n]"), "f.json")
	if items[0].Line != 2 || items[1].Line != 4 || items[1].Err == nil || items[1].Where() != "f.json:4" {
		t.Fatalf("array lines: %+v", items)
	}
}

func TestParseNamesTheLine(t *testing.T) {
	_, err := commands.Parse(strings.NewReader("{\"meetingRoomNumber\":\"1\"}\n{\"meetingRoomNumber\":\"2\"}\n{oops\n"), "cmds.ndjson")
	if err == nil || !strings.HasPrefix(err.Error(), "cmds.ndjson:3:") {
		t.Fatalf("err = %v", err)
	}
	_, err = commands.Parse(strings.NewReader("[\n{\"meetingRoomNumber\":\"1\"},\n{oops}]"), "a.json")
	if err == nil || !strings.HasPrefix(err.Error(), "a.json:3:") {
		t.Fatalf("err = %v", err)
	}
	items, err := commands.Parse(strings.NewReader("{\"meetingRoomNumber\":\"1\"}\n{\"meetingRoomNumber\":\"1\",\"mode\":\"manual\"}\n"), "b.ndjson")
	if err != nil || items[1].Err == nil || items[1].Line != 2 || items[0].Err != nil {
		t.Fatalf("schema error line: %+v %v", items, err)
	}
}
