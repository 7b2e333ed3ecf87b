package worker_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	dto "github.com/prometheus/client_model/go"
	"github.com/rs/zerolog"

	"github.com/xygroup/xygroup/worker"
	wt "github.com/xygroup/xygroup/worker/workertest"
	"github.com/xygroup/xygroup/xylink/sandbox"
)

// gaugeOf reads the value of a gauge series of w's metrics (-1: absent).
func gaugeOf(t *testing.T, w *wt.Running, name, store string) float64 {
	t.Helper()
	families, err := w.Metrics().Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			if labelIs(m, "store", store) {
				return m.GetGauge().GetValue()
			}
		}
	}
	return -1
}

func labelIs(m *dto.Metric, name, value string) bool {
	for _, l := range m.GetLabel() {
		if l.GetName() == name && l.GetValue() == value {
			return true
		}
	}
	return false
}

// fillBucket puts values of size bytes under prefix into the bucket until it
// refuses one for lack of room, and returns the keys written.
func fillBucket(t *testing.T, kv jetstream.KeyValue, prefix string, size int) []string {
	t.Helper()
	var keys []string
	for i := 0; ; i++ {
		key := fmt.Sprintf("%s.%d", prefix, i)
		if _, err := kv.Put(context.Background(), key, []byte(strings.Repeat("x", size))); err != nil {
			if !strings.Contains(err.Error(), "maximum bytes exceeded") {
				t.Fatalf("filling %s: %v", kv.Bucket(), err)
			}
			return keys
		}
		keys = append(keys, key)
	}
}

// purgeKeys removes keys from the bucket and their bytes with them (a
// delete would leave a marker in their place).
func purgeKeys(t *testing.T, js jetstream.JetStream, bucket string, keys []string) {
	t.Helper()
	s, err := js.Stream(context.Background(), "KV_"+bucket)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		if err := s.Purge(context.Background(), jetstream.WithPurgeSubject("$KV."+bucket+"."+k)); err != nil {
			t.Fatal(err)
		}
	}
}

// linesWith counts the log lines at warn or above that contain s.
func linesWith(t *testing.T, logs *wt.SyncBuffer, s string) (n int, lines []string) {
	t.Helper()
	for _, line := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
		var f map[string]any
		if json.Unmarshal([]byte(line), &f) != nil {
			continue
		}
		if lvl := f["level"]; (lvl == "warn" || lvl == "error") && strings.Contains(line, s) {
			n++
			lines = append(lines, line)
		}
	}
	return n, lines
}

// A full commands bucket (xygroup-commands) refuses the records of new
// commands: they stay queued, are not sent, and are taken again after a
// while, spending no attempt; the bucket is logged once (not once per command
// per second), shown by xygroup_store_full and /readyz; once records leave,
// every command is created, once.
func TestFullRecordsBucketKeepsCommandsQueued(t *testing.T) {
	t.Cleanup(worker.SetStoreFullRetry(3 * time.Second))
	srv := wt.StartNATS(t)
	sb := wt.StartSandbox(t, sandbox.Config{Rate: 1e6})
	var logs wt.SyncBuffer
	w := wt.StartWorker(t, srv, wt.Client(t, sb), worker.WithLogger(zerolog.New(&logs).Level(zerolog.InfoLevel)),
		worker.WithStreams(worker.StreamSettings{RecordsMaxBytes: 64 << 10}))
	js := wt.JetStream(t, wt.Connect(t, srv))
	wt.AwaitStream(t, js, "KV_"+worker.BucketCommands)
	kv, err := js.KeyValue(context.Background(), worker.BucketCommands)
	if err != nil {
		t.Fatal(err)
	}
	fillers := fillBucket(t, kv, "filler", 4<<10)
	fillers = append(fillers, fillBucket(t, kv, "small", 64)...)

	const n = 5
	for i := range n {
		id := fmt.Sprintf("full-%d", i)
		wt.Publish(t, js, id, wt.Command(id, "m-"+id))
	}
	wt.Eventually(t, time.Minute, func() bool {
		c, _ := linesWith(t, &logs, "maximum bytes exceeded")
		return c > 0
	}, "the full bucket refuses a record")
	if got := gaugeOf(t, w, "xygroup_store_full", worker.BucketCommands); got != 1 {
		t.Errorf("xygroup_store_full{store=%q} = %v, want 1", worker.BucketCommands, got)
	}
	if check, ok := w.Checks()["stores"]; !ok {
		t.Errorf("no readiness check stores")
	} else if err := check(); err == nil || !strings.Contains(err.Error(), worker.BucketCommands) {
		t.Errorf("readiness check stores: %v, want the full bucket named", err)
	}
	if gaugeOf(t, w, "xygroup_store_max_bytes", worker.BucketCommands) > 0 { // else the next check times out
		wt.Eventually(t, time.Minute, func() bool {
			return gaugeOf(t, w, "xygroup_store_bytes", worker.BucketCommands) > 60<<10 &&
				gaugeOf(t, w, "xygroup_store_max_bytes", worker.BucketCommands) == 64<<10
		}, "the bucket's fill gauges")
	} else {
		t.Errorf("no xygroup_store_max_bytes{store=%q}", worker.BucketCommands)
	}
	if reqs := len(sb.Requests()); reqs != 0 {
		t.Errorf("%d requests reached the API while no record could be written", reqs)
	}

	purgeKeys(t, js, worker.BucketCommands, fillers)
	evs := wt.AwaitTerminal(t, js, n, 2*time.Minute)
	for id, es := range evs {
		if len(es) != 1 || es[0].Subject != worker.SubjectCreated {
			t.Errorf("%s: %d events, the last %s, want one created", id, len(es), es[len(es)-1].Subject)
			continue
		}
		if a, _ := es[0].Fields["attempts"].(float64); a != 1 {
			t.Errorf("%s: attempts %v, want 1 (waiting for room spends none)", id, a)
		}
	}
	if reqs := len(sb.Requests()); reqs != n {
		t.Errorf("%d requests, want %d: each command sent once", reqs, n)
	}
	if c, lines := linesWith(t, &logs, "maximum bytes exceeded"); c != 1 {
		t.Errorf("%d log lines at warn or above about the full bucket, want 1 (a line a minute per store):\n%s", c, strings.Join(lines, "\n"))
	}
}

// A command whose request left but whose outcome cannot be recorded (the
// record cannot grow to hold its event) keeps its answer: its event is
// stored, it is not acknowledged, and it is never sent again; once there is
// room its record is written, every 30 s tried, logged once.
func TestFullRecordsBucketAfterTheCallSendsOnce(t *testing.T) {
	t.Cleanup(worker.SetStoreFullRetry(3 * time.Second))
	srv := wt.StartNATS(t)
	sb := wt.StartSandbox(t, sandbox.Config{Rate: 1e6})
	var logs wt.SyncBuffer
	wt.StartWorker(t, srv, wt.Client(t, sb), worker.WithLogger(zerolog.New(&logs).Level(zerolog.InfoLevel)),
		worker.WithStreams(worker.StreamSettings{RecordsMaxBytes: 64 << 10}))
	js := wt.JetStream(t, wt.Connect(t, srv))
	wt.AwaitStream(t, js, "KV_"+worker.BucketCommands)
	kv, err := js.KeyValue(context.Background(), worker.BucketCommands)
	if err != nil {
		t.Fatal(err)
	}
	fillers := fillBucket(t, kv, "filler", 4<<10)
	small := fillBucket(t, kv, "small", 64)
	// Room for a begun record (about 250 bytes) and its sent mark, not for
	// its terminal event (about 1 KB).
	purgeKeys(t, js, worker.BucketCommands, small[:4])

	wt.Publish(t, js, "late-full", wt.Command("late-full", "m-late-full"))
	wt.Eventually(t, time.Minute, func() bool {
		c, _ := linesWith(t, &logs, "maximum bytes exceeded")
		return c > 0
	}, "the full bucket refuses the record's terminal event")
	if reqs := len(sb.Requests()); reqs != 1 {
		t.Fatalf("%d requests before the outcome could be recorded, want 1 (the bucket filled after the mark)", reqs)
	}
	purgeKeys(t, js, worker.BucketCommands, append(fillers, small[4:]...))
	wt.Eventually(t, 2*time.Minute, func() bool {
		st, err := worker.LookupCommand(context.Background(), js, wt.Enterprise, "late-full")
		return err == nil && st.Terminal != ""
	}, "the outcome recorded once there is room")
	wt.AwaitConsumerIdle(t, js, time.Minute)
	evs := wt.AwaitTerminal(t, js, 1, time.Minute)
	if es := evs["late-full"]; len(es) != 1 || es[0].Subject != worker.SubjectCreated {
		t.Errorf("%d events, want one created", len(es))
	}
	if reqs := len(sb.Requests()); reqs != 1 {
		t.Errorf("%d requests, want 1: a command whose request left is never sent again", reqs)
	}
	if c, lines := linesWith(t, &logs, "maximum bytes exceeded"); c != 1 {
		t.Errorf("%d log lines at warn or above about the full bucket, want 1:\n%s", c, strings.Join(lines, "\n"))
	}
}
