package ratelimit

import (
	"encoding/json"
	"strconv"
	"time"
)

// A grant costs a request and a reply, thousands a second on a busy
// replica: their JSON is written and read here without reflection for the
// shapes this version sends (what encoding/json would write), and by
// encoding/json otherwise (an earlier version's, or anything unexpected).

// requestHead is the part of an enterprise's requests that does not change
// between attempts: {"e":…,"p":…,"r":…
func requestHead(r grantRequest) []byte {
	b := append([]byte(`{"e":`), jsonString(r.Enterprise)...)
	b = append(b, `,"p":`...)
	b = strconv.AppendInt(b, int64(r.Priority), 10)
	rate, _ := json.Marshal(r.Rate)
	b = append(b, `,"r":`...)
	return append(b, rate...)
}

// encodeRequest writes r as json.Marshal would, head being requestHead(r).
func encodeRequest(head []byte, r grantRequest) []byte {
	b := make([]byte, 0, len(head)+64)
	b = append(b, head...)
	if r.Lead != 0 {
		b = append(b, `,"l":`...)
		b = strconv.AppendInt(b, r.Lead, 10)
	}
	if r.Dispenser != "" {
		b = append(b, `,"d":`...)
		b = append(b, jsonString(r.Dispenser)...)
	}
	if r.Seq != 0 {
		b = append(b, `,"s":`...)
		b = strconv.AppendUint(b, r.Seq, 10)
	}
	return append(b, '}')
}

// plainValue: true, false or a number as JSON writes it (strconv would
// also take "inf", "0x10", "05", "1." or "-.5").
func plainValue(v []byte) bool {
	if s := string(v); s == "true" || s == "false" {
		return true
	}
	return jsonNumber(v)
}

// jsonNumber: -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?
func jsonNumber(v []byte) bool {
	i := 0
	digits := func() int {
		n := 0
		for i < len(v) && v[i] >= '0' && v[i] <= '9' {
			i, n = i+1, n+1
		}
		return n
	}
	if i < len(v) && v[i] == '-' {
		i++
	}
	switch {
	case i < len(v) && v[i] == '0':
		i++
	case digits() == 0:
		return false
	}
	if i < len(v) && v[i] == '.' {
		i++
		if digits() == 0 {
			return false
		}
	}
	if i < len(v) && (v[i] == 'e' || v[i] == 'E') {
		i++
		if i < len(v) && (v[i] == '+' || v[i] == '-') {
			i++
		}
		if digits() == 0 {
			return false
		}
	}
	return i == len(v)
}

// jsonString quotes s for JSON; plain ids (letters, digits, "-_.:") need no
// escaping.
func jsonString(s string) []byte {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.' || c == ':') {
			b, _ := json.Marshal(s)
			return b
		}
	}
	b := make([]byte, 0, len(s)+2)
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

func decodeRequest(data []byte, r *grantRequest) error {
	var out grantRequest
	f := flatReader{data: data}
	good := f.open()
	for good {
		key, str, v, more := f.next()
		if !more {
			break
		}
		var n int64
		switch {
		case string(key) == "e" && str:
			out.Enterprise = string(v)
		case string(key) == "d" && str:
			out.Dispenser = string(v)
		case string(key) == "p" && !str:
			n, good = parseInt(v)
			out.Priority = Priority(n)
		case string(key) == "r" && !str:
			if n, good = parseInt(v); good {
				out.Rate = float64(n)
			} else {
				var err error
				out.Rate, err = strconv.ParseFloat(string(v), 64)
				good = err == nil
			}
		case string(key) == "l" && !str:
			out.Lead, good = parseInt(v)
		case string(key) == "s" && !str:
			n, good = parseInt(v)
			out.Seq, good = uint64(n), good && n >= 0
		default:
			good = false
		}
	}
	if good && f.closed() {
		*r = out
		return nil
	}
	var slow grantRequest
	err := json.Unmarshal(data, &slow)
	*r = slow
	return err
}

// decodeReply reads a reply; known is the dispenser named in the last one,
// kept rather than copied again when this one names it too.
func decodeReply(data []byte, known string) (grantReply, error) {
	var out grantReply
	f := flatReader{data: data}
	good := f.open()
	for good {
		key, str, v, more := f.next()
		if !more {
			break
		}
		var n int64
		switch {
		case string(key) == "ok" && string(v) == "true" && !str:
			out.OK = true
		case string(key) == "ok" && string(v) == "false" && !str:
			out.OK = false
		case string(key) == "d" && str && string(v) == known:
			out.Dispenser = known
		case string(key) == "d" && str:
			out.Dispenser = string(v)
		case string(key) == "s" && !str:
			n, good = parseInt(v)
			out.Seq, good = uint64(n), good && n >= 0
		case string(key) == "q" && !str:
			out.Queued, good = parseInt(v)
		case string(key) == "b" && !str:
			n, good = parseInt(v)
			out.Budget = &n
		default:
			good = false
		}
	}
	if good && f.closed() {
		return out, nil
	}
	var slow grantReply
	err := json.Unmarshal(data, &slow)
	return slow, err
}

// parseInt reads a JSON integer of at most 18 digits.
func parseInt(v []byte) (int64, bool) {
	neg := len(v) > 0 && v[0] == '-'
	if neg {
		v = v[1:]
	}
	if len(v) == 0 || len(v) > 18 || len(v) > 1 && v[0] == '0' {
		return 0, false
	}
	var n int64
	for _, c := range v {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	if neg {
		n = -n
	}
	return n, true
}

// flatReader reads a JSON object of keys and plain values, without spaces:
// strings without escapes (ASCII), numbers, true or false. Anything else
// makes next end and closed false.
type flatReader struct {
	data []byte
	i    int
	done bool // the closing brace was read
	bad  bool
}

func (f *flatReader) open() bool {
	if len(f.data) < 2 || f.data[0] != '{' || f.data[len(f.data)-1] != '}' {
		return false
	}
	f.i = 1
	f.done = f.i == len(f.data)-1
	return true
}

func (f *flatReader) closed() bool { return f.done && !f.bad }

// next returns the next field (str: its value was a string, v without the
// quotes), or more false at the end or on anything unexpected.
func (f *flatReader) next() (key []byte, str bool, v []byte, more bool) {
	data, i := f.data, f.i
	if f.done || f.bad {
		return nil, false, nil, false
	}
	f.bad = true // until the field is read whole
	if data[i] != '"' {
		return nil, false, nil, false
	}
	end := i + 1
	for end < len(data) && data[end] != '"' && data[end] != '\\' {
		end++
	}
	if end+1 >= len(data) || data[end] != '"' || data[end+1] != ':' {
		return nil, false, nil, false
	}
	key = data[i+1 : end]
	i = end + 2
	if i >= len(data) {
		return nil, false, nil, false
	}
	if data[i] == '"' {
		end = i + 1
		for end < len(data) && data[end] != '"' && data[end] != '\\' && data[end] >= 0x20 && data[end] < 0x80 {
			end++
		}
		if end >= len(data) || data[end] != '"' {
			return nil, false, nil, false
		}
		str, v, i = true, data[i+1:end], end+1
	} else {
		end = i
		for end < len(data) && data[end] != ',' && data[end] != '}' {
			end++
		}
		v, i = data[i:end], end
		if !plainValue(v) {
			return nil, false, nil, false
		}
	}
	if i >= len(data) {
		return nil, false, nil, false
	}
	switch data[i] {
	case '}':
		if i != len(data)-1 {
			return nil, false, nil, false
		}
		f.done = true
	case ',':
		i++
		if i >= len(data)-1 {
			return nil, false, nil, false
		}
	default:
		return nil, false, nil, false
	}
	f.i, f.bad = i, false
	return key, str, v, true
}

// reply is a grant (ok) or "ask again", with the request's place and, for a
// grant, how long the request waited in the queue and its departure budget.
func (d *dispenser) reply(ok bool, p *pending, queued, budget time.Duration) []byte {
	b := make([]byte, 0, 80)
	if ok {
		b = append(b, `{"ok":true,"q":`...)
		b = strconv.AppendInt(b, queued.Microseconds(), 10)
		b = append(b, `,"b":`...)
		b = strconv.AppendInt(b, budget.Microseconds(), 10)
	} else {
		b = append(b, `{"ok":false`...)
	}
	b = append(b, `,"d":"`...)
	b = append(b, d.id...)
	b = append(b, `","s":`...)
	b = strconv.AppendUint(b, p.seq, 10)
	return append(b, '}')
}
