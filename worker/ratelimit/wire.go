package ratelimit

import (
	"encoding/json"
	"strconv"
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
// also take "inf" or "0x10").
func plainValue(v []byte) bool {
	if s := string(v); s == "true" || s == "false" {
		return true
	}
	if len(v) == 0 || !(v[0] == '-' || v[0] >= '0' && v[0] <= '9') {
		return false
	}
	for _, c := range v {
		if !(c >= '0' && c <= '9' || c == '-' || c == '+' || c == '.' || c == 'e' || c == 'E') {
			return false
		}
	}
	return true
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
	ok := flatObject(data, func(key string, str bool, v []byte) bool {
		var err error
		switch {
		case key == "e" && str:
			r.Enterprise = string(v)
		case key == "d" && str:
			r.Dispenser = string(v)
		case key == "p" && !str:
			var p int64
			p, err = strconv.ParseInt(string(v), 10, 64)
			r.Priority = Priority(p)
		case key == "r" && !str:
			r.Rate, err = strconv.ParseFloat(string(v), 64)
		case key == "l" && !str:
			r.Lead, err = strconv.ParseInt(string(v), 10, 64)
		case key == "s" && !str:
			r.Seq, err = strconv.ParseUint(string(v), 10, 64)
		default:
			return false
		}
		return err == nil
	})
	if ok {
		return nil
	}
	*r = grantRequest{}
	return json.Unmarshal(data, r)
}

func decodeReply(data []byte, r *grantReply) error {
	ok := flatObject(data, func(key string, str bool, v []byte) bool {
		var err error
		switch {
		case key == "ok" && string(v) == "true":
			r.OK = true
		case key == "ok" && string(v) == "false":
			r.OK = false
		case key == "d" && str:
			r.Dispenser = string(v)
		case key == "s" && !str:
			r.Seq, err = strconv.ParseUint(string(v), 10, 64)
		case key == "q" && !str:
			r.Queued, err = strconv.ParseInt(string(v), 10, 64)
		case key == "b" && !str:
			r.Budget, err = strconv.ParseInt(string(v), 10, 64)
		default:
			return false
		}
		return err == nil
	})
	if ok {
		return nil
	}
	*r = grantReply{}
	return json.Unmarshal(data, r)
}

// flatObject reads a JSON object of keys and plain values, without spaces:
// strings without escapes, numbers, true or false. It calls field for each
// (str: the value was a string, v without its quotes) and returns false,
// having perhaps called field, on anything else or when field does.
func flatObject(data []byte, field func(key string, str bool, v []byte) bool) bool {
	if len(data) < 2 || data[0] != '{' || data[len(data)-1] != '}' {
		return false
	}
	i := 1
	if i == len(data)-1 {
		return true
	}
	for {
		// "key":
		if data[i] != '"' {
			return false
		}
		end := i + 1
		for end < len(data) && data[end] != '"' && data[end] != '\\' {
			end++
		}
		if end+1 >= len(data) || data[end] != '"' || data[end+1] != ':' {
			return false
		}
		key := string(data[i+1 : end])
		i = end + 2
		if i >= len(data) {
			return false
		}
		var str bool
		var v []byte
		if data[i] == '"' {
			end = i + 1
			for end < len(data) && data[end] != '"' && data[end] != '\\' && data[end] >= 0x20 && data[end] < 0x80 {
				end++
			}
			if end >= len(data) || data[end] != '"' {
				return false
			}
			str, v, i = true, data[i+1:end], end+1
		} else {
			end = i
			for end < len(data) && data[end] != ',' && data[end] != '}' {
				end++
			}
			v, i = data[i:end], end
			if !plainValue(v) {
				return false
			}
		}
		if !field(key, str, v) {
			return false
		}
		if i >= len(data) {
			return false
		}
		switch data[i] {
		case '}':
			return i == len(data)-1
		case ',':
			i++
			if i >= len(data) {
				return false
			}
		default:
			return false
		}
	}
}
