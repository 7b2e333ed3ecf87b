package main

import (
	"bufio"
	"context"
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"

	wt "github.com/xygroup/xygroup/worker/workertest"
)

// The worker's NATS connection reports a disconnect and a reconnect of its
// server as JSON log lines, like the rest of its log.
func TestWorkerLogsNATSConnectionEventsAsJSON(t *testing.T) {
	srv := wt.StartRestartableNATS(t)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr := os.Stderr
	os.Stderr = w // the worker logs to os.Stderr
	defer func() { os.Stderr = stderr }()
	lines := make(chan string, 1024)
	go func() {
		sc := bufio.NewScanner(r)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, _, err := runApp(ctx, "worker", "--sandbox", "--nats-url", srv.URL(), "--http-addr", freeAddr(t),
			"--sandbox-listen", freeAddr(t))
		done <- err
	}()
	await := func(what string) map[string]any {
		t.Helper()
		timeout := time.After(60 * time.Second)
		for {
			select {
			case line := <-lines:
				var fields map[string]any
				if err := json.Unmarshal([]byte(line), &fields); err != nil {
					t.Fatalf("not a JSON line on stderr: %s", line)
				}
				if strings.Contains(line, what) {
					return fields
				}
			case <-timeout:
				t.Fatalf("no log line with %q", what)
			}
		}
	}
	await("worker consuming")
	srv.Stop()
	t.Logf("%v", await("NATS disconnected"))
	srv.Start()
	t.Logf("%v", await("NATS reconnected"))
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	// The pipe stays open: the connection's closed handler may still log.
}
