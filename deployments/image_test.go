package deployments

import (
	"os"
	"regexp"
	"strings"
	"testing"
)

// The image's build context leaves out secrets and local data, and its build
// stage's base image is an exact version.
func TestDockerImage(t *testing.T) {
	raw, err := os.ReadFile("../.dockerignore")
	if err != nil {
		t.Fatal(err)
	}
	ignored := map[string]bool{}
	for _, line := range strings.Split(string(raw), "\n") {
		ignored[strings.TrimSpace(line)] = true
	}
	for _, must := range []string{".git", "**/.env", "**/*.env", "**/xylink.env", "data", "**/data", "**/*.pem", "**/*.key", "**/*.creds", "**/.env", "**/*tenants*.json", "**/*tenants*.yaml", "deployments/kubernetes/secret.yaml"} {
		if !ignored[must] {
			t.Errorf(".dockerignore does not exclude %s", must)
		}
	}
	df, err := os.ReadFile("../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	from := regexp.MustCompile(`(?m)^FROM\s+(\S+)`).FindAllStringSubmatch(string(df), -1)
	if len(from) != 2 {
		t.Fatalf("FROM lines: %v", from)
	}
	if !regexp.MustCompile(`^golang:[0-9]+\.[0-9]+\.[0-9]+$|@sha256:`).MatchString(from[0][1]) {
		t.Errorf("build stage %s is not an exact version", from[0][1])
	}
	if !strings.Contains(from[1][1], "@sha256:") && !strings.Contains(string(df), "pin\n# gcr.io/distroless/static-debian12@sha256") {
		t.Errorf("runtime stage %s: neither a digest nor the note to pin one", from[1][1])
	}
}
