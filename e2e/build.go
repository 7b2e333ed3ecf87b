package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
)

// Binaries are the programs the suite runs as processes.
type Binaries struct {
	Dir        string
	Xygroup    string
	NATSServer string
}

// Build compiles the xygroup binary and a nats-server from the module the
// project already requires (no download) into dir.
func Build(dir string) (Binaries, error) {
	root, err := moduleRoot()
	if err != nil {
		return Binaries{}, err
	}
	b := Binaries{Dir: dir, Xygroup: filepath.Join(dir, "xygroup"), NATSServer: filepath.Join(dir, "nats-server")}
	for _, job := range [][2]string{{b.Xygroup, "./cmd/xygroup"}, {b.NATSServer, "github.com/nats-io/nats-server/v2"}} {
		cmd := exec.Command("go", "build", "-o", job[0], job[1])
		cmd.Dir = root
		out, err := cmd.CombinedOutput()
		if err != nil {
			return Binaries{}, fmt.Errorf("go build %s: %v\n%s", job[1], err, out)
		}
	}
	return b, nil
}

// moduleRoot is the directory holding go.mod, found from this file's package.
func moduleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %v", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		_, file, _, _ := runtime.Caller(0)
		return filepath.Dir(filepath.Dir(file)), nil
	}
	return filepath.Dir(mod), nil
}

// bins are the binaries of this test process (set once by TestMain); keepLogs
// keeps every scenario's directory, not only a failed one's.
var (
	bins     Binaries
	keepLogs bool
)

// SetBinaries sets the binaries the harness runs, and whether to keep logs.
func SetBinaries(b Binaries, keep bool) { bins, keepLogs = b, keep }
