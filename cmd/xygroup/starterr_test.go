package main

import (
	"bytes"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// runBinary runs the binary to its end (at most within) and returns its exit
// code, stderr and how long it ran.
func runBinary(t *testing.T, within time.Duration, env []string, args ...string) (int, string, time.Duration) {
	t.Helper()
	cmd := exec.Command(buildBinary(t), args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	cmd.Env = append(os.Environ(), env...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	began := time.Now()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		var exit *exec.ExitError
		switch {
		case err == nil:
			return 0, stderr.String(), time.Since(began)
		case errors.As(err, &exit):
			return exit.ExitCode(), stderr.String(), time.Since(began)
		default:
			t.Fatal(err)
		}
	case <-time.After(within):
		_ = cmd.Process.Kill()
		<-done
		t.Fatalf("xygroup %s still running after %v\n%s", strings.Join(args, " "), within, stderr.String())
	}
	return 0, "", 0
}

// A worker whose embedded server cannot start exits at once naming the cause,
// not after the 30 s wait for a server that will never be ready.
func TestBinaryEmbeddedServerStartErrors(t *testing.T) {
	worker := func(dataDir, listen string) (int, string, time.Duration) {
		return runBinary(t, 60*time.Second, []string{"NATS_URL="}, "worker", "--sandbox", "--data-dir", dataDir,
			"--embedded-listen", listen, "--http-addr", freeAddr(t), "--sandbox-listen", freeAddr(t))
	}
	// Runs as root in CI, where no permission bits stop a write: a regular
	// file on the path stops everyone.
	file := filepath.Join(t.TempDir(), "not-a-dir")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(file, "data")
	code, stderr, took := worker(dir, freeAddr(t))
	t.Logf("unwritable data dir: exit %d after %v: %s", code, took.Round(time.Millisecond), lastLine(stderr))
	if code == 0 || !strings.Contains(lastLine(stderr), "store directory "+dir) || !strings.Contains(lastLine(stderr), "not a directory") {
		t.Errorf("unwritable data dir: exit %d, stderr:\n%s", code, stderr)
	}
	if took > 10*time.Second {
		t.Errorf("unwritable data dir: exited after %v", took)
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	code, stderr, took = worker(t.TempDir(), ln.Addr().String())
	t.Logf("port in use: exit %d after %v: %s", code, took.Round(time.Millisecond), lastLine(stderr))
	if code == 0 || !strings.Contains(lastLine(stderr), "listen "+ln.Addr().String()+": address already in use") {
		t.Errorf("port in use: exit %d, stderr:\n%s", code, stderr)
	}
	if took > 10*time.Second {
		t.Errorf("port in use: exited after %v", took)
	}
}

// A mistyped flag or command: one line that names it as typed and points to
// the help, exit code 2; no page of help.
func TestBinaryUsageErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"status", "--jsn"}, []string{"unknown flag --jsn", "run 'xygroup status --help' for usage"}},
		{[]string{"status", "--meetings", "ten"}, []string{`invalid value "ten" for --meetings`, "run 'xygroup status --help' for usage"}},
		{[]string{"replay", "--since"}, []string{"--since needs a value", "run 'xygroup replay --help' for usage"}},
		{[]string{"statsu"}, []string{`unknown command "statsu"`, "status", "run 'xygroup --help' for usage"}},
	} {
		code, stderr, _ := runBinary(t, 60*time.Second, nil, tc.args...)
		lines := strings.Split(strings.TrimSpace(stderr), "\n")
		t.Logf("xygroup %s: exit %d: %s", strings.Join(tc.args, " "), code, stderr)
		if code != 2 || len(lines) != 1 || strings.Contains(stderr, "USAGE") || strings.Contains(stderr, "OPTIONS") {
			t.Errorf("xygroup %s: exit %d, want 2 and one line:\n%s", strings.Join(tc.args, " "), code, stderr)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(lines[0], w) {
				t.Errorf("xygroup %s: %q does not say %q", strings.Join(tc.args, " "), lines[0], w)
			}
		}
	}
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	return s[strings.LastIndex(s, "\n")+1:]
}
