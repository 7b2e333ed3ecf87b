package main

import (
	"errors"
	"net/http"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	wt "github.com/xygroup/xygroup/worker/workertest"
)

// A second worker started on the data directory of a running one (its own
// ports) refuses to start its embedded server on the same store: it exits
// non-zero naming the directory and the first worker's PID, and the first runs
// on. The lock dies with its holder: after the first is killed (SIGKILL, so
// its lock file stays behind), a worker starts on the directory again.
func TestBinarySecondWorkerOnOneDataDir(t *testing.T) {
	bin := buildBinary(t)
	dir := t.TempDir()
	var firstArgs map[string]string
	start := func() (*exec.Cmd, *wt.SyncBuffer, string) {
		httpAddr := freeAddr(t)
		args := map[string]string{"--embedded-listen": freeAddr(t), "--sandbox-listen": freeAddr(t)}
		if firstArgs == nil {
			firstArgs = args
		}
		cmd, logs := startProcess(t, bin, []string{"NATS_URL="}, "worker", "--sandbox", "--data-dir", dir,
			"--embedded-listen", args["--embedded-listen"], "--http-addr", httpAddr, "--sandbox-listen", args["--sandbox-listen"])
		return cmd, logs, httpAddr
	}
	first, logs1, http1 := start()
	awaitStatus(t, "http://"+http1+"/readyz", 60*time.Second, func(s int) bool { return s == http.StatusOK })

	second, logs2, http2 := start()
	exited := make(chan error, 1)
	go func() { exited <- second.Wait() }()
	var err error
	deadline := time.After(60 * time.Second)
wait:
	for {
		select {
		case err = <-exited:
			break wait
		case <-deadline:
			t.Fatalf("the second worker neither exited nor answered within 60s\n%s", logs2.String())
		case <-time.After(50 * time.Millisecond):
			if resp, herr := http.Get("http://" + http2 + "/healthz"); herr == nil {
				resp.Body.Close()
				t.Fatalf("a second worker runs its embedded server on %s beside PID %d\n%s", dir, first.Process.Pid, logs2.String())
			}
		}
	}
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() == 0 {
		t.Fatalf("the second worker ended with %v, want a non-zero exit code\n%s", err, logs2.String())
	}
	out := logs2.String()
	if !strings.Contains(out, dir) || !strings.Contains(out, "PID "+strconv.Itoa(first.Process.Pid)) {
		t.Fatalf("the refusal does not name %s and PID %d:\n%s", dir, first.Process.Pid, out)
	}
	t.Logf("exit code %d: %s", exit.ExitCode(), strings.TrimSpace(out[strings.LastIndex(strings.TrimSpace(out), "\n")+1:]))
	if resp, herr := http.Get("http://" + http1 + "/readyz"); herr != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("the first worker is not ready after the refusal: %v %v\n%s", resp, herr, logs1.String())
	}

	// A second `worker --sandbox` with the first one's own ports (the same
	// command run twice in one directory): refused for the data directory,
	// naming the first one's PID, not for the first port found taken.
	code, stderr, _ := runBinary(t, 60*time.Second, []string{"NATS_URL="}, "worker", "--sandbox", "--data-dir", dir,
		"--embedded-listen", firstArgs["--embedded-listen"], "--http-addr", http1, "--sandbox-listen", firstArgs["--sandbox-listen"])
	if code != 1 || !strings.Contains(stderr, "PID "+strconv.Itoa(first.Process.Pid)) || !strings.Contains(stderr, "--data-dir") ||
		strings.Contains(stderr, "address already in use") {
		t.Fatalf("the same command again: exit %d, want 1 and the lock's owner, PID %d:\n%s", code, first.Process.Pid, stderr)
	}

	if err := first.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = first.Wait()
	_, logs3, http3 := start()
	awaitHTTP(t, "http://"+http3+"/readyz", 60*time.Second)
	if strings.Contains(logs3.String(), "in use") {
		t.Fatalf("the worker after the kill: %s", logs3.String())
	}
}
