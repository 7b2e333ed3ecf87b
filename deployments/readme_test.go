package deployments

import (
	"os"
	"regexp"
	"strings"
	"testing"
)

// configNames are the environment variables the README's configuration table
// documents: deployment files may use only these (of the XYGROUP_, XYLINK_ and
// NATS_ families), so that they and the docs agree.
func configNames(t *testing.T) map[string]bool {
	t.Helper()
	raw, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	re := regexp.MustCompile("`([A-Z][A-Z0-9_]+)`")
	for _, line := range strings.Split(string(raw), "\n") {
		if !strings.HasPrefix(line, "| `") {
			continue
		}
		first := strings.SplitN(line[1:], "|", 2)[0]
		for _, m := range re.FindAllStringSubmatch(first, -1) {
			names[m[1]] = true
		}
	}
	for _, must := range []string{"NATS_URL", "XYLINK_TOKEN", "XYGROUP_RATE", "XYLINK_CLIENT_SECRET"} {
		if !names[must] {
			t.Fatalf("README table lacks %s (parsed %d names)", must, len(names))
		}
	}
	return names
}

func isConfigFamily(name string) bool {
	return strings.HasPrefix(name, "XYGROUP_") || strings.HasPrefix(name, "XYLINK_") || strings.HasPrefix(name, "NATS_")
}
