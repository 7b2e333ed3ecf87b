package main

import (
	"bytes"
	wt "github.com/xygroup/xygroup/worker/workertest"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// buildBinary builds xygroup once per test run.
func buildBinary(t *testing.T) string {
	t.Helper()
	binOnce.Do(func() {
		dir, err := os.MkdirTemp("", "xygroup-bin")
		if err != nil {
			binErr = err
			return
		}
		binPath = filepath.Join(dir, "xygroup")
		out, err := exec.Command("go", "build", "-o", binPath, ".").CombinedOutput()
		if err != nil {
			binErr = err
			binPath = string(out)
		}
	})
	if binErr != nil {
		t.Fatalf("go build: %v\n%s", binErr, binPath)
	}
	return binPath
}

// startProcess runs the binary with args, logging to a buffer.
func startProcess(t *testing.T, bin string, env []string, args ...string) (*exec.Cmd, *wt.SyncBuffer) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	var out wt.SyncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.Env = append(os.Environ(), env...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _, _ = cmd.Process.Wait() })
	return cmd, &out
}

// The README's quickstart with the real binary: `worker --sandbox` on its embedded
// default, `publish --wait` prints the created event, SIGTERM ends the worker
// with exit code 0.
func TestBinaryQuickstartAndSIGTERM(t *testing.T) {
	bin := buildBinary(t)
	natsAddr, httpAddr, sbAddr := freeAddr(t), freeAddr(t), freeAddr(t)
	worker, logs := startProcess(t, bin, nil, "worker", "--sandbox", "--data-dir", t.TempDir(),
		"--embedded-listen", natsAddr, "--http-addr", httpAddr, "--sandbox-listen", sbAddr, "--nats-url", "",
		"--http-allowed-hosts", " status.example.internal, other.example.internal")
	awaitHTTP(t, "http://"+httpAddr+"/healthz", 60*time.Second)

	publish := exec.Command(bin, "publish", "--wait", "--timeout", "60s", "--embedded-listen", natsAddr,
		"../../schemas/examples/command-manual.json")
	publish.Env = append(os.Environ(), "NATS_URL=")
	var stdout, stderr bytes.Buffer
	publish.Stdout, publish.Stderr = &stdout, &stderr
	if err := publish.Run(); err != nil {
		t.Fatalf("publish --wait: %v\n%s\nworker:\n%s", err, stderr.String(), logs.String())
	}
	if !strings.Contains(stdout.String(), `"commandId":"sched-2026-11-25-0001"`) || !strings.Contains(stdout.String(), `"groupNo":"mms`) {
		t.Fatalf("publish --wait printed %s", stdout.String())
	}
	awaitHTTP(t, "http://"+httpAddr+"/readyz", 10*time.Second)
	// The status page answers its address and the configured names, not a
	// name rebound to it.
	for host, want := range map[string]int{"status.example.internal": http.StatusOK, "other.example.internal:9090": http.StatusOK,
		httpAddr: http.StatusOK, "rebind.attacker.example": http.StatusMisdirectedRequest} {
		req, _ := http.NewRequest(http.MethodGet, "http://"+httpAddr+"/", nil)
		req.Host = host
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("GET / with Host %s: %s, want %d", host, resp.Status, want)
		}
	}

	if err := worker.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- worker.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("worker exited with %v\n%s", err, logs.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("worker did not exit after SIGTERM\n%s", logs.String())
	}
	all := logs.String()
	stopped := strings.Index(all, "worker stopped")
	if stopped < 0 {
		t.Fatalf("no clean stop in the log:\n%s", all)
	}
	// A clean stop closes its NATS connection without a warning or an error.
	for _, line := range strings.Split(all[stopped:], "\n") {
		if strings.Contains(line, `"level":"warn"`) || strings.Contains(line, `"level":"error"`) {
			t.Errorf("after the clean stop: %s", line)
		}
	}
}
