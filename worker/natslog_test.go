package worker_test

import (
	"encoding/json"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/xygroup/xygroup/worker"
	wt "github.com/xygroup/xygroup/worker/workertest"
)

// What the NATS client reports asynchronously (here a slow consumer, a
// disconnect, a reconnect and the close) becomes JSON lines in the log, and
// nothing plain reaches stderr.
func TestNATSClientEventsAreJSONLogLines(t *testing.T) {
	// The client's default handler writes to os.Stderr: catch what it would write.
	r, wpipe, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr := os.Stderr
	os.Stderr = wpipe
	plain := make(chan string, 1)
	go func() { b, _ := io.ReadAll(r); plain <- string(b) }()
	defer func() { os.Stderr = stderr }()

	srv := wt.StartRestartableNATS(t)
	var logs wt.SyncBuffer
	nc := srv.Connect(append(worker.NATSLogging(zerolog.New(&logs)), nats.Name("under-test"))...)
	await := func(what string) map[string]any {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for {
			for _, line := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
				if !strings.Contains(line, what) {
					continue
				}
				var fields map[string]any
				if err := json.Unmarshal([]byte(line), &fields); err != nil {
					t.Fatalf("not a JSON line: %s", line)
				}
				return fields
			}
			if time.Now().After(deadline) {
				t.Fatalf("no log line with %q:\n%s", what, logs.String())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}

	// A subscription that holds one message at most, and is busy.
	release := make(chan struct{})
	sub, err := nc.Subscribe("test.slow", func(*nats.Msg) { <-release })
	if err != nil {
		t.Fatal(err)
	}
	if err := sub.SetPendingLimits(1, -1); err != nil {
		t.Fatal(err)
	}
	for range 5 {
		_ = nc.Publish("test.slow", []byte("x"))
	}
	_ = nc.Flush()
	slow := await("slow consumer")
	close(release)
	t.Logf("slow consumer: %v", slow)
	if slow["subject"] != "test.slow" || slow["subscription"] != "async" || slow["connection"] != "under-test" || slow["level"] != "warn" {
		t.Fatalf("the slow consumer line does not say which subscription: %v", slow)
	}

	srv.Stop()
	t.Logf("disconnect: %v", await("NATS disconnected"))
	srv.Start()
	t.Logf("reconnect: %v", await("NATS reconnected"))
	nc.Close()
	t.Logf("close: %v", await("NATS connection closed"))

	os.Stderr = stderr
	_ = wpipe.Close()
	if out := <-plain; strings.Contains(out, "nats:") {
		t.Fatalf("the NATS client wrote plain lines to stderr:\n%s", out)
	}
}
