package record_test

import (
	"strings"
	"testing"

	"github.com/xygroup/xygroup/worker/record"
)

// Keys are stored: a change of scheme would lose every existing record.
func TestKeys(t *testing.T) {
	for _, c := range []struct{ got, want string }{
		{record.Key("e1", "c1"), "t.e1.c1"},
		{record.Key("", "c1"), "th."},
		{record.Key("e.1", "c1"), "th."},
		{record.LegacyKey("c1"), "c.c1"},
		{record.LegacyKey("c 1"), "h."},
	} {
		if c.got != c.want && !(strings.HasSuffix(c.want, ".") && strings.HasPrefix(c.got, c.want) && len(c.got) == len(c.want)+64) {
			t.Errorf("key %q, want %q", c.got, c.want)
		}
	}
	if record.Key("ab", "c") == record.Key("a", "bc") || record.Key("a.b", "c") == record.Key("a", "b.c") {
		t.Error("two commands share a key")
	}
}

func TestTerminalIsTenants(t *testing.T) {
	ev := []byte(`{"commandId":"c1","enterpriseId":"e1"}`)
	if !record.TerminalIsTenants(ev, "e1") || record.TerminalIsTenants(ev, "e2") || record.TerminalIsTenants([]byte(`x`), "") {
		t.Error("TerminalIsTenants")
	}
}
