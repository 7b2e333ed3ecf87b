package e2e

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"strings"
)

// NonJSONLines lists the lines of a log file that are not a JSON object (at
// most max of them, with the total count).
func NonJSONLines(path string, max int) ([]string, int, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	var out []string
	n, line := 0, 0
	for sc.Scan() {
		line++
		b := bytes.TrimSpace(sc.Bytes())
		if len(b) == 0 {
			continue
		}
		if b[0] != '{' || !json.Valid(b) {
			n++
			if len(out) < max {
				s := string(b)
				if len(s) > 200 {
					s = s[:200] + "…"
				}
				out = append(out, fmt.Sprintf("line %d: %s", line, s))
			}
		}
	}
	return out, n, sc.Err()
}

// SecretsIn lists the secrets found in a file.
func SecretsIn(path string, secrets []string) ([]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	s := string(b)
	var found []string
	for _, sec := range secrets {
		if sec != "" && strings.Contains(s, sec) {
			found = append(found, sec)
		}
	}
	return found, nil
}

// redact shows the start of a secret only.
func redact(s string) string {
	if len(s) <= 6 {
		return "***"
	}
	return s[:6] + "…"
}

// tail is the last n lines of a file.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
