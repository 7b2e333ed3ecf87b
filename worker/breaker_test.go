package worker_test

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/xygroup/xygroup/worker"
	wt "github.com/xygroup/xygroup/worker/workertest"
	"github.com/xygroup/xygroup/xylink"
	"github.com/xygroup/xygroup/xylink/sandbox"
)

// steady calls publish every interval until stop is closed.
func steady(publish func(i int), interval time.Duration, stop <-chan struct{}) *sync.WaitGroup {
	var wg sync.WaitGroup
	wg.Go(func() {
		tick := time.NewTicker(interval)
		defer tick.Stop()
		for i := 0; ; i++ {
			publish(i)
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		}
	})
	return &wg
}

// Three workers and a steady stream of commands while the API has a 20-second
// outage: the cluster stops calling within the trip threshold (plus the in-flight
// calls of the moment) and one probe per open period; no command fails; all
// complete after the recovery.
func TestBreakerPausesTheClusterDuringAnOutage(t *testing.T) {
	const threshold = 5
	openFor, outage := 4*time.Second, 10*time.Second
	srv := wt.StartNATS(t)
	sb := wt.StartSandbox(t, sandbox.Config{Rate: 20})
	c := wt.Client(t, sb)
	for range 3 {
		wt.StartWorker(t, srv, c, worker.WithRate(20, nil),
			worker.WithBreakerSettings(worker.BreakerSettings{ConsecutiveFailures: threshold, OpenFor: openFor}))
	}
	js := wt.JetStream(t, wt.Connect(t, srv))
	wt.AwaitStream(t, js, worker.StreamCommands)
	stop := make(chan struct{})
	var n int
	pub := steady(func(i int) {
		id := fmt.Sprintf("steady-%03d", i)
		wt.Publish(t, js, id, wt.Command(id, "m-"+id))
		n = i + 1
	}, 100*time.Millisecond, stop)

	time.Sleep(2 * time.Second) // steady traffic before the outage: a point in the scenario
	outageStart := time.Now()
	outageEnd := outageStart.Add(outage)
	sb.AddOutage(sandbox.Outage{From: outageStart, Until: outageEnd})
	time.Sleep(time.Until(outageEnd) + 3*time.Second) // the outage runs its course
	close(stop)
	pub.Wait()

	events := wt.AwaitTerminal(t, js, n, 2*time.Minute)
	for id, evs := range events {
		if len(evs) != 1 || evs[0].Subject != worker.SubjectCreated {
			t.Errorf("%s: %d events, first on %s: %s", id, len(evs), evs[0].Subject, evs[0].Data)
		}
	}
	var during, firstSuccessAfter int
	var recoveredAt time.Time
	for _, r := range sb.Requests() {
		if r.Endpoint != "dynamicGroup" {
			continue
		}
		if !r.At.Before(outageStart) && r.At.Before(outageEnd) {
			during++
		}
		if !r.At.Before(outageEnd) && r.Status == 200 && recoveredAt.IsZero() {
			recoveredAt = r.At
			firstSuccessAfter++
		}
	}
	probes := int(outage/openFor) + 1
	t.Logf("%d commands; API calls during the %v outage: %d (threshold %d, probes at most %d); first success %v after the recovery",
		n, outage, during, threshold, probes, recoveredAt.Sub(outageEnd).Round(time.Millisecond))
	if during > threshold+probes+3 {
		t.Fatalf("%d calls during the outage: more than the threshold %d, %d probes and 3 in flight", during, threshold, probes)
	}
	if recoveredAt.IsZero() {
		t.Fatal("no success after the recovery")
	}
}

// The outage of one tenant of two: the other's commands keep completing during it.
func TestBreakerIsPerTenant(t *testing.T) {
	srv := wt.StartNATS(t)
	sb := wt.StartSandbox(t, sandbox.Config{Rate: 100, Enterprises: []sandbox.Enterprise{{ID: "other", Token: "other-token"}}})
	c := wt.Client(t, sb, xylink.Credentials{EnterpriseID: "other", Token: "other-token"})
	for range 2 {
		wt.StartWorker(t, srv, c, worker.WithRate(100, nil),
			worker.WithBreakerSettings(worker.BreakerSettings{ConsecutiveFailures: 3, OpenFor: 3 * time.Second}))
	}
	js := wt.JetStream(t, wt.Connect(t, srv))
	wt.AwaitStream(t, js, worker.StreamCommands)
	outageStart := time.Now()
	outageEnd := outageStart.Add(8 * time.Second)
	sb.AddOutage(sandbox.Outage{EnterpriseID: wt.Enterprise, From: outageStart, Until: outageEnd})
	stop := make(chan struct{})
	var n int
	pub := steady(func(i int) {
		for _, ent := range []string{wt.Enterprise, "other"} {
			id := fmt.Sprintf("%s-%03d", ent, i)
			wt.Publish(t, js, id, wt.Command(id, "m-"+id, "enterpriseId", fmt.Sprintf("%q", ent)))
		}
		n = 2 * (i + 1)
	}, 100*time.Millisecond, stop)
	time.Sleep(time.Until(outageEnd) + 2*time.Second) // through the outage
	close(stop)
	pub.Wait()

	events := wt.AwaitTerminal(t, js, n, 2*time.Minute)
	otherDuring := 0
	for id, evs := range events {
		if len(evs) != 1 || evs[0].Subject != worker.SubjectCreated {
			t.Errorf("%s: %d events, first on %s", id, len(evs), evs[0].Subject)
			continue
		}
		at, _ := time.Parse(time.RFC3339Nano, evs[0].Fields["occurredAt"].(string))
		if evs[0].Fields["enterpriseId"] == "other" && at.After(outageStart.Add(time.Second)) && at.Before(outageEnd) {
			otherDuring++
		}
	}
	failedCalls := sb.Stats().ByAnswer["503"]
	t.Logf("%d commands; the other tenant completed %d during the outage; %d calls of the failing tenant failed", n, otherDuring, failedCalls)
	if otherDuring < 40 {
		t.Fatalf("the other tenant completed only %d commands during the outage", otherDuring)
	}
}

// Refused credentials are not the commands' fault: the tenant's commands are held
// (not failed, not nak-looped), readiness says why, and once the credentials are
// right the held commands complete.
func TestRefusedCredentialsHoldTheTenant(t *testing.T) {
	srv := wt.StartNATS(t)
	sb := wt.StartSandbox(t, sandbox.Config{Rate: 1e6})
	c, err := xylink.NewClient(sb.URL, xylink.WithTenants(xylink.Credentials{EnterpriseID: wt.Enterprise, Token: "wrong-token"}))
	if err != nil {
		t.Fatal(err)
	}
	w := wt.StartWorker(t, srv, c, worker.WithBreakerSettings(worker.BreakerSettings{CredentialsRetry: time.Second}))
	js := wt.JetStream(t, wt.Connect(t, srv))
	wt.AwaitStream(t, js, worker.StreamCommands)
	const n = 20
	for i := range n {
		id := fmt.Sprintf("cred-%02d", i)
		wt.Publish(t, js, id, wt.Command(id, "m-"+id))
	}
	wt.AwaitConsumerIdle(t, js, 30*time.Second)
	wt.Eventually(t, 10*time.Second, func() bool { return w.Checks()["breakers"]() != nil }, "readiness reporting the held tenant")
	t.Logf("readiness: %v", w.Checks()["breakers"]())
	burst := sb.Stats().ByAnswer["401"] // calls in flight when the first refusal came back
	from := time.Now()
	time.Sleep(3 * time.Second) // a window to count calls in: the hold probes once a second
	held := sb.Stats().ByAnswer["401"] - burst
	window := time.Since(from) // longer than 3 s on a loaded machine
	if err := c.AddTenant(xylink.Credentials{EnterpriseID: wt.Enterprise, Token: wt.Token}); err != nil {
		t.Fatal(err)
	}
	events := wt.AwaitTerminal(t, js, n, time.Minute)
	for id, evs := range events {
		if len(evs) != 1 || evs[0].Subject != worker.SubjectCreated {
			t.Errorf("%s: %d events, first on %s", id, len(evs), evs[0].Subject)
		}
	}
	st := sb.Stats()
	t.Logf("%d commands; 401 answers: %d in the first burst, %d in %v while held (one probe a second), %d in all",
		n, burst, held, window.Round(time.Millisecond), st.ByAnswer["401"])
	// One probe a second, and one more for a probe on the wire at the start.
	if most := int(window/time.Second) + 1; held > most {
		t.Fatalf("%d calls in %v with refused credentials, more than %d: the tenant was not held", held, window.Round(time.Millisecond), most)
	}
}

// Hundreds of commands queued behind the limiter on three workers when the API
// goes down: once the tenant opens, the calls already waiting for a grant do not
// go out when it comes (the breaker is checked again after the grant, and the
// command joins the hold without spending an attempt). Calls during the outage
// stay within the threshold, the half-open probes and those on the wire.
func TestBreakerCheckedAgainAfterTheGrant(t *testing.T) {
	const threshold = 5
	openFor := 4 * time.Second
	outage := 10 * time.Second
	srv := wt.StartNATS(t)
	sb := wt.StartSandbox(t, sandbox.Config{Rate: 20})
	c := wt.Client(t, sb)
	for range 3 {
		wt.StartWorker(t, srv, c, worker.WithRate(20, nil),
			worker.WithBreakerSettings(worker.BreakerSettings{ConsecutiveFailures: threshold, OpenFor: openFor}))
	}
	js := wt.JetStream(t, wt.Connect(t, srv))
	wt.AwaitStream(t, js, worker.StreamCommands)
	const n = 400
	for i := range n {
		id := fmt.Sprintf("queued-%03d", i)
		wt.Publish(t, js, id, wt.Command(id, "m-"+id))
	}
	// Traffic flows and every worker's slots wait for grants before the outage.
	wt.Eventually(t, time.Minute, func() bool { return sb.Stats().ByAnswer["200"] >= 40 }, "traffic before the outage")
	outageStart := time.Now()
	outageEnd := outageStart.Add(outage)
	sb.AddOutage(sandbox.Outage{From: outageStart, Until: outageEnd})

	events := wt.AwaitTerminal(t, js, n, 3*time.Minute)
	for id, evs := range events {
		if len(evs) != 1 || evs[0].Subject != worker.SubjectCreated {
			t.Errorf("%s: %d events, first on %s: %s", id, len(evs), evs[0].Subject, evs[0].Data)
		}
	}
	during := 0
	for _, r := range sb.Requests() {
		if r.Endpoint == "dynamicGroup" && !r.At.Before(outageStart) && r.At.Before(outageEnd) {
			during++
		}
	}
	probes := int(outage/openFor) + 1
	const onTheWire = 3
	t.Logf("%d commands queued; API calls during the %v outage: %d (threshold %d, probes at most %d, on the wire %d); answers %v",
		n, outage, during, threshold, probes, onTheWire, sb.Stats().ByAnswer)
	if during > threshold+probes+onTheWire {
		t.Fatalf("%d calls during the outage > threshold %d + %d probes + %d on the wire", during, threshold, probes, onTheWire)
	}
	if st := sb.Stats(); len(st.DuplicateCreates) != 0 {
		t.Fatalf("created twice: %v", st.DuplicateCreates)
	}
}
