package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"unicode/utf8"
)

// termSafe makes a string from a command or an event safe to print on a
// terminal: control characters (C0, DEL, C1), Unicode bidi controls and bytes
// that are not UTF-8 are printed escaped (\x1b, \u202e), so that a field cannot
// set the window title, move the cursor, erase a line, start a new table row or
// reorder what follows it. Everything else is kept as it is.
func termSafe(s string) string {
	if !needsEscape(s) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size <= 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case r < 0x20 || r == 0x7f:
			fmt.Fprintf(&b, `\x%02x`, r)
		case unsafeRune(r):
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			b.WriteString(s[i : i+size])
		}
		i += size
	}
	return b.String()
}

// termSafeLines is termSafe for a message of several lines: its line breaks
// are kept, everything else escaped.
func termSafeLines(s string) string {
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		lines[i] = termSafe(l)
	}
	return strings.Join(lines, "\n")
}

func needsEscape(s string) bool {
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		if (r == utf8.RuneError && size <= 1) || r < 0x20 || r == 0x7f || unsafeRune(r) {
			return true
		}
		i += size
	}
	return false
}

// unsafeRune: C1 controls (0x80–0x9f: CSI, OSC... in one code point) and the
// characters that change the direction of the text after them.
func unsafeRune(r rune) bool {
	switch {
	case r >= 0x80 && r <= 0x9f:
		return true
	case r == 0x061c, r == 0x200e, r == 0x200f: // ALM, LRM, RLM
		return true
	case r >= 0x202a && r <= 0x202e: // LRE, RLE, PDF, LRO, RLO
		return true
	case r >= 0x2066 && r <= 0x2069: // LRI, RLI, FSI, PDI
		return true
	}
	return false
}

// jsonSafe is JSON output (an event as the stream holds it, an answer) on one
// line, made safe for a terminal without changing what it decodes to: JSON escapes C0
// controls but not C1 controls or bidi controls, so those are written as
// \uXXXX, which only a string can hold. Bytes that are not UTF-8 and raw
// controls other than JSON's whitespace (not valid JSON; data published by
// others) are written escaped as well, U+FFFD for the former.
func jsonSafe(b []byte) string {
	// One line per value, as JSON lines are: a failed event quotes its
	// command as published, line breaks of a pretty-printed file included.
	var compact bytes.Buffer
	if json.Compact(&compact, b) == nil {
		b = compact.Bytes()
	}
	s := string(b)
	if !needsEscape(s) {
		return s
	}
	var out strings.Builder
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size <= 1:
			out.WriteString(`\ufffd`)
		case r == '\n' || r == '\t' || r == '\r':
			out.WriteRune(r)
		case r < 0x20 || r == 0x7f || unsafeRune(r):
			fmt.Fprintf(&out, `\u%04x`, r)
		default:
			out.WriteString(s[i : i+size])
		}
		i += size
	}
	return out.String()
}
