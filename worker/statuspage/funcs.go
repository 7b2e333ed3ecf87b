package statuspage

import (
	"bytes"
	"encoding/json"
	"fmt"
	"html/template"
	"net/url"
	"strings"
	"time"

	"github.com/xygroup/xygroup/worker/contract"
)

// commandURL is a command's view: /commands/{id}, or /commands/?id= for the
// ids a path cannot carry ("." and ".." are resolved away by browsers, even
// percent-encoded).
func commandURL(enterpriseID, id string) string {
	if id == "" || strings.Trim(id, ".") == "" {
		return "/commands/?id=" + url.QueryEscape(id) + "&enterprise=" + url.QueryEscape(enterpriseID)
	}
	return "/commands/" + url.PathEscape(id) + "?enterprise=" + url.QueryEscape(enterpriseID)
}

var funcs = template.FuncMap{
	// since: "12s ago", "in 4s", relative to now.
	"since": func(now, t time.Time) string {
		if t.IsZero() {
			return "–"
		}
		d := now.Sub(t).Round(time.Second)
		if d < 0 {
			return "in " + (-d).String()
		}
		return d.String() + " ago"
	},
	"uptime": func(now, t time.Time) string {
		if t.IsZero() {
			return "–"
		}
		return now.Sub(t).Round(time.Second).String()
	},
	// outcome names a terminal event's subject briefly: "created", "failed: rejected".
	"outcome": func(subject string) string {
		if c, ok := strings.CutPrefix(subject, contract.SubjectFailed+"."); ok {
			return "failed: " + c
		}
		return strings.TrimPrefix(subject, "xylink.groups.")
	},
	"clock": func(t time.Time) string {
		if t.IsZero() {
			return "–"
		}
		return t.UTC().Format("2006-01-02 15:04:05 UTC")
	},
	"iso":        func(t time.Time) string { return t.UTC().Format(time.RFC3339) },
	"commandURL": commandURL,
	"f1":         func(f float64) string { return fmt.Sprintf("%.1f", f) },
	"f0":         func(f float64) string { return fmt.Sprintf("%.0f", f) },
	"percent":    func(f float64) string { return fmt.Sprintf("%.0f%%", f) },
	// pretty indents a JSON body for reading.
	"pretty": func(b json.RawMessage) string {
		var out bytes.Buffer
		if json.Indent(&out, b, "", "  ") != nil {
			return string(b)
		}
		return out.String()
	},
	"short": func(s string, n int) string {
		if r := []rune(s); len(r) > n {
			return string(r[:n]) + "…"
		}
		return s
	},
	"join": strings.Join,
	"meetingName": func(m string) string {
		if m == "" {
			return "(none)"
		}
		return m
	},
}
