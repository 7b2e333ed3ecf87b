package worker_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/rs/zerolog"

	"github.com/xygroup/xygroup/worker"
	wt "github.com/xygroup/xygroup/worker/workertest"
	"github.com/xygroup/xygroup/xylink/sandbox"
)

// The replica that holds a waiting meeting's probe claim is stopped (what SIGTERM
// does) in the middle of its probe. The claim does not outlive it: the meeting's
// record holds no live claim once the replica has stopped, so the other replica
// probes at its usual backoff, not after the claim's one-minute lease. And the
// probed command's outcome is unknown ("maybe created") only when its request
// reached the API and the answer was cut off: a probe call in flight finishes
// within the drain timeout, and a probe still waiting for its rate-limit grant
// when the drain timeout ends it has sent nothing.
func TestStopDuringProbeReleasesItsClaim(t *testing.T) {
	cases := []struct {
		name         string
		latency      time.Duration // a call's time at the sandbox: the window to stop in
		rate         float64
		drainTimeout time.Duration
		maybeCreated bool
	}{
		{name: "call answered within the drain", latency: 4 * time.Second, rate: 10000, drainTimeout: 20 * time.Second},
		{name: "call cut off by the drain timeout", latency: 4 * time.Second, rate: 10000, drainTimeout: 300 * time.Millisecond, maybeCreated: true},
		// One grant every 5 s: the first call takes one, the first probe waits for the next.
		{name: "waiting for its grant", rate: 0.2, drainTimeout: 300 * time.Millisecond},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			const meeting, n = "m-probe-stop", 3
			srv := wt.StartNATS(t)
			sb := wt.StartSandbox(t, sandbox.Config{Rate: 1e6})
			c := wt.Client(t, sb)
			if _, err := sb.AddMeeting(sandbox.MeetingSpec{Number: meeting, StartsIn: sandbox.Duration(time.Hour)}); err != nil {
				t.Fatal(err)
			}
			opts := []worker.Option{worker.WithRate(tc.rate, nil), worker.WithDrainTimeout(tc.drainTimeout),
				worker.WithProbeBackoff(worker.Backoff{Initial: 200 * time.Millisecond, Max: 400 * time.Millisecond})}
			var logbuf wt.SyncBuffer
			t.Cleanup(func() {
				if t.Failed() {
					t.Logf("first:\n%s", logbuf.String())
				}
			})
			first := wt.StartWorker(t, srv, c, append(opts, worker.WithLogger(zerolog.New(&logbuf).Level(zerolog.DebugLevel)))...)
			js := wt.JetStream(t, wt.Connect(t, srv))
			for i := range n {
				id := fmt.Sprintf("probe-stop-%d", i)
				wt.Publish(t, js, id, wt.Command(id, meeting))
			}
			awaitParked(t, js, n)

			// The first replica, alone, probes; catch its probe where the case wants it.
			if tc.latency > 0 {
				sb.SetFaults(sandbox.Faults{Latency: sandbox.Duration(tc.latency)})
				awaitCallAtSandbox(t, sb)
				if rec := meetingRecord(t, js); !rec.LeaseUntil.After(time.Now()) {
					t.Fatalf("a probe call is at the sandbox but the meeting has no live claim: %+v", rec)
				}
			} else {
				awaitClaim(t, js)
				if calls := sb.Stats().Requests; calls != 1 {
					t.Fatalf("%d calls when the probe was claimed, want the first call only", calls)
				}
			}
			if err := first.Stop(); err != nil {
				t.Fatal(err)
			}

			rec := meetingRecord(t, js)
			if left := time.Until(rec.LeaseUntil); left > 0 {
				t.Errorf("the stopped replica's probe claim is still held for %.1f s: %+v", left.Seconds(), rec)
			}
			maybe := 0
			for i := range n {
				id := fmt.Sprintf("probe-stop-%d", i)
				cr := commandRecord(t, js, id)
				if cr.MaybeCreated {
					maybe++
				}
				if !cr.PendingUntil.IsZero() {
					t.Errorf("%s: a call pending until %v", id, cr.PendingUntil)
				}
			}
			if want := map[bool]int{false: 0, true: 1}[tc.maybeCreated]; maybe != want {
				t.Errorf("%d commands maybe created, want %d", maybe, want)
			}

			// Started only now, so that the claim read above can only be the
			// stopped replica's.
			second := wt.StartWorker(t, srv, c, opts...)
			sb.SetFaults(sandbox.Faults{})
			sb.StartMeeting(meeting)
			started := time.Now()
			events := wt.AwaitTerminal(t, js, n, 2*time.Minute)
			took := time.Since(started)
			created := 0
			for id, evs := range events {
				for _, e := range evs {
					switch {
					case e.Subject == worker.SubjectCreated:
						created++
						if e.Fields["reconciled"] == true {
							t.Errorf("%s: created as reconciled: %s", id, e.Data)
						}
					case e.Terminal() && e.Subject != worker.SubjectFailed+".already_open":
						t.Errorf("%s ended on %s: %s", id, e.Subject, e.Data)
					}
				}
			}
			answered := testutil.ToFloat64(second.Metrics().Probes.WithLabelValues("answered"))
			t.Logf("the meeting's commands ended %.2f s after it started (the stopped replica's claim ran until %.1f s after the start); the other replica's answered probes: %.0f",
				took.Seconds(), max(0, rec.LeaseUntil.Sub(started).Seconds()), answered)
			if created != 1 || answered != 1 {
				t.Errorf("%d created events, %.0f answered probes of the other replica (want 1 and 1)", created, answered)
			}
		})
	}
}

// awaitClaim waits until the only meeting's probe is claimed.
func awaitClaim(t *testing.T, js jetstream.JetStream) {
	t.Helper()
	wt.Eventually(t, time.Minute, func() bool { return meetingRecord(t, js).LeaseUntil.After(time.Now()) }, "the meeting's probe claimed")
}

// awaitCallAtSandbox waits until a call has been processed by
// the sandbox and its answer is held in the injected latency. (A call answered
// at once is processed before it is recorded: counting processed against
// recorded calls would take that moment for a call held.)
func awaitCallAtSandbox(t *testing.T, sb *sandbox.Server) {
	t.Helper()
	wt.Eventually(t, time.Minute, func() bool { return sb.Stats().Delaying > 0 }, "a call held at the sandbox")
}

// meetingRecord reads the only record of the meetings bucket, as stored.
func meetingRecord(t *testing.T, js jetstream.JetStream) (r struct {
	State      string    `json:"state"`
	Probes     int       `json:"probes"`
	LeaseUntil time.Time `json:"leaseUntil"`
}) {
	t.Helper()
	kv, err := js.KeyValue(context.Background(), worker.BucketMeetings)
	if err != nil {
		t.Fatal(err)
	}
	keys, err := kv.Keys(context.Background())
	if err != nil || len(keys) != 1 {
		t.Fatalf("meetings bucket: keys %v, %v", keys, err)
	}
	e, err := kv.Get(context.Background(), keys[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(e.Value(), &r); err != nil {
		t.Fatal(err)
	}
	return r
}

// commandRecord reads a command's idempotency record, as stored.
func commandRecord(t *testing.T, js jetstream.JetStream, id string) (r struct {
	Attempts     int       `json:"attempts"`
	MaybeCreated bool      `json:"maybeCreated"`
	PendingUntil time.Time `json:"pendingUntil"`
}) {
	t.Helper()
	kv, err := js.KeyValue(context.Background(), worker.BucketCommands)
	if err != nil {
		t.Fatal(err)
	}
	e, err := kv.Get(context.Background(), "t."+wt.Enterprise+"."+id)
	if err != nil {
		t.Fatalf("record of %s: %v", id, err)
	}
	if err := json.Unmarshal(e.Value(), &r); err != nil {
		t.Fatal(err)
	}
	return r
}
