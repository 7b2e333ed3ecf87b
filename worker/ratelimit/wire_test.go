package ratelimit

import (
	"encoding/json"
	"reflect"
	"testing"
)

// Requests and replies written and read without reflection must be what
// encoding/json writes and reads, for this version's shapes and for
// anything else an earlier version or a stranger sends.
func TestWireMatchesEncodingJSON(t *testing.T) {
	requests := []grantRequest{
		{Enterprise: "enterprise-0042", Priority: Live, Rate: 20},
		{Enterprise: "e", Priority: Replay, Rate: 19.5, Lead: 1234, Place: Place{Dispenser: "Ab3xYz", Seq: 99}},
		{Enterprise: "ent \"quoted\" \\ é 企业\n", Priority: Probe, Rate: 1e-7, Lead: -3},
		{Enterprise: "", Priority: Retry, Rate: 0, Place: Place{Seq: 1 << 60}},
		{Enterprise: "x", Rate: 2.5e21, Place: Place{Dispenser: "d<>&"}},
	}
	for _, r := range requests {
		want, _ := json.Marshal(r)
		got := encodeRequest(requestHead(r), r)
		if string(got) != string(want) {
			t.Errorf("encodeRequest(%+v) = %s, encoding/json writes %s", r, got, want)
		}
		var back grantRequest
		if err := decodeRequest(got, &back); err != nil || back != r {
			t.Errorf("decodeRequest(%s) = %+v, %v; want %+v", got, back, err, r)
		}
	}
	replies := []string{
		`{"ok":true,"q":1500,"b":11500,"d":"Ab3xYz","s":42}`,
		`{"ok":false,"d":"Ab3xYz","s":7}`,
		`{"ok":false}`,
		`{}`,
		`{"ok": true, "q": 3}`,
		`{"ok":1}`,
		`{"ok":true,"q":1e3}`,
		`{"ok":true,"d":"caf\u00e9","s":1}`,
		`{"ok":true,"extra":{"nested":[1,2]},"s":2}`,
		`{"ok":true,"b":inf}`,
		`{"ok":true,"s":-1}`,
		`{"ok":true,"d":"é"}`,
		`{"ok":true,}`,
		`{"ok":true,"q":007}`,
		`{"ok":true,"s":12345678901234567890}`,
		`{"ok":true}x}`,
		`not json`,
	}
	for _, data := range replies {
		var want grantReply
		wantErr := json.Unmarshal([]byte(data), &want)
		got, gotErr := decodeReply([]byte(data), "Ab3xYz")
		if (gotErr == nil) != (wantErr == nil) || (wantErr == nil && !reflect.DeepEqual(got, want)) {
			t.Errorf("decodeReply(%s) = %+v, %v; encoding/json reads %+v, %v", data, got, gotErr, want, wantErr)
		}
	}
	for _, data := range []string{`{"e":"a","p":0,"r":20,"l":5}`, `{"p":1,"e":"b","r":20}`, `{"e":"a","p":"x"}`, `{"e":"a","r":0x10}`, `{"e":"a","r":-}`,
		// Numbers strconv reads but JSON does not: a request no dispenser
		// took before must not be granted now.
		`{"e":"a","r":05}`, `{"e":"a","r":1.}`, `{"e":"a","r":-.5}`, `{"e":"a","r":1.e5}`, `{"e":"a","r":00}`, `{"e":"a","r":2e}`,
		`{"e":"a","r":1e+5}`, `{"e":"a","r":-0.0}`, `{"e":"a","r":20.5E-1}`} {
		var want, got grantRequest
		wantErr := json.Unmarshal([]byte(data), &want)
		gotErr := decodeRequest([]byte(data), &got)
		if (gotErr == nil) != (wantErr == nil) || (wantErr == nil && !reflect.DeepEqual(got, want)) {
			t.Errorf("decodeRequest(%s) = %+v, %v; encoding/json reads %+v, %v", data, got, gotErr, want, wantErr)
		}
	}
}
