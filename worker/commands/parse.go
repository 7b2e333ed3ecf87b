// Package commands reads, checks and publishes xygroup commands, and awaits their
// terminal events: what `xygroup publish` does, for Go scheduling systems too.
package commands

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strings"

	"github.com/xygroup/xygroup/schemas"
	"github.com/xygroup/xygroup/worker/contract"
)

// Item is one command read from an input, with where it was found.
type Item struct {
	Source string // file name, or "-" for stdin
	Line   int    // 1-based line where the command starts
	Raw    json.RawMessage
	ID     string // commandId, when the command has one
	Err    error  // why it does not match the command schema; nil when valid
}

// Where is "file:line".
func (it Item) Where() string { return fmt.Sprintf("%s:%d", it.Source, it.Line) }

// Parse reads one JSON object, a JSON array of objects, or NDJSON (one object a
// line; blank lines skipped), and checks every command against the command
// schema. A syntax error is returned as an error naming the line.
func Parse(r io.Reader, source string) ([]Item, error) {
	raw, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", source, err)
	}
	trimmed := bytes.TrimSpace(raw)
	lead := len(raw) - len(bytes.TrimLeft(raw, " \t\r\n"))
	var items []Item
	switch {
	case len(trimmed) == 0:
		return nil, nil
	case trimmed[0] == '[':
		dec := json.NewDecoder(bytes.NewReader(raw))
		if _, err := dec.Token(); err != nil {
			return nil, syntaxErr(source, raw, err)
		}
		for dec.More() {
			var m json.RawMessage
			before := int(dec.InputOffset())
			if err := dec.Decode(&m); err != nil {
				var se *json.SyntaxError
				if asSyntax(err, &se) {
					// The offset counts from where this element's decoding began.
					return nil, fmt.Errorf("%s:%d: not JSON: %v", source, lineAt(raw, before+int(se.Offset)), err)
				}
				return nil, syntaxErr(source, raw, err)
			}
			end := int(dec.InputOffset())
			start := end - len(m)
			items = append(items, Item{Source: source, Line: lineAt(raw, start), Raw: m})
		}
		if _, err := dec.Token(); err != nil {
			return nil, syntaxErr(source, raw, err)
		}
	case json.Valid(trimmed):
		items = append(items, Item{Source: source, Line: lineAt(raw, lead), Raw: trimmed})
	default:
		sc := bufio.NewScanner(bytes.NewReader(raw))
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for n := 1; sc.Scan(); n++ {
			line := bytes.TrimSpace(sc.Bytes())
			if len(line) == 0 {
				continue
			}
			if !json.Valid(line) {
				var v any
				err := json.Unmarshal(line, &v)
				return nil, fmt.Errorf("%s:%d: not JSON: %v", source, n, err)
			}
			items = append(items, Item{Source: source, Line: n, Raw: append(json.RawMessage(nil), line...)})
		}
		if err := sc.Err(); err != nil {
			return nil, fmt.Errorf("%s: %w", source, err)
		}
	}
	for i := range items {
		it := &items[i]
		if err := schemas.Validate(schemas.Command, it.Raw); err != nil {
			it.Err = err
		}
		// Empty when the command is not a JSON object or its commandId not a string.
		it.ID = contract.IdentityOf(it.Raw).CommandID
	}
	return items, nil
}

func syntaxErr(source string, raw []byte, err error) error {
	var se *json.SyntaxError
	if ok := asSyntax(err, &se); ok {
		return fmt.Errorf("%s:%d: not JSON: %v", source, lineAt(raw, int(se.Offset)), err)
	}
	return fmt.Errorf("%s: not JSON: %v", source, err)
}

func asSyntax(err error, target **json.SyntaxError) bool {
	se, ok := err.(*json.SyntaxError)
	*target = se
	return ok
}

func lineAt(raw []byte, offset int) int {
	offset = max(0, min(offset, len(raw)))
	return strings.Count(string(raw[:offset]), "\n") + 1
}
