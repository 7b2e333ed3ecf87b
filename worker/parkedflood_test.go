package worker_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/xygroup/xygroup/worker"
	wt "github.com/xygroup/xygroup/worker/workertest"
	"github.com/xygroup/xygroup/xylink"
	"github.com/xygroup/xygroup/xylink/sandbox"
)

// publishFull publishes a command, asking again while the commands stream
// is full (its publisher's back-pressure), for up to within; it reports
// whether the command was stored.
func publishFull(js jetstream.JetStream, id string, payload []byte, within time.Duration) error {
	m := nats.NewMsg(worker.SubjectCreate)
	m.Data = payload
	m.Header.Set(nats.MsgIdHdr, id)
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	for {
		_, err := js.PublishMsg(ctx, m)
		if err == nil {
			return nil
		}
		if !strings.Contains(err.Error(), "maximum bytes exceeded") && !errors.Is(err, nats.ErrNoResponders) {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: %w", id, err)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// floodCase: flooders publish far-future commands of ~80 KB into a parked
// stream of 4 MB, each enterprise with a share of it. The shared consumer
// has 64 ack-pending slots: a refused command that held one would soon take
// them all.
type floodCase struct {
	flooders int
	share    float64
	// full: the stream fills before any flooder's share does.
	full bool
}

// While enterprises flood the parked stream with far-future commands (within
// the horizon), another enterprise's commands for a started meeting, a
// backlog saturating its rate, keep 95% of its rate; every flooding command
// is parked or refused as over_quota with one terminal event, none lost.
func TestParkedFloodOtherTenantFlows(t *testing.T) {
	t.Run("share", func(t *testing.T) { testParkedFlood(t, floodCase{flooders: 1, share: 0.25}) })
	t.Run("stream full", func(t *testing.T) { testParkedFlood(t, floodCase{flooders: 3, share: 0.5, full: true}) })
}

func testParkedFlood(t *testing.T, fc floodCase) {
	const (
		steady  = "steady-ent"
		rate    = 10.0
		backlog = 100 // at the rate, 10 s
	)
	ents := []sandbox.Enterprise{{ID: steady, Token: "steady-token"}}
	creds := []xylink.Credentials{{EnterpriseID: steady, Token: "steady-token"}}
	flooders := make([]string, fc.flooders)
	for i := range flooders {
		flooders[i] = fmt.Sprintf("flood-ent-%d", i)
		ents = append(ents, sandbox.Enterprise{ID: flooders[i], Token: "token-" + flooders[i]})
		creds = append(creds, xylink.Credentials{EnterpriseID: flooders[i], Token: xylink.Secret("token-" + flooders[i])})
	}
	srv := wt.StartNATS(t)
	sb := wt.StartSandbox(t, sandbox.Config{Rate: 1e6, Enterprises: ents})
	for i := range backlog { // groups are created once a meeting
		if _, err := sb.AddMeeting(sandbox.MeetingSpec{Number: fmt.Sprintf("m-steady-%03d", i), EnterpriseID: steady}); err != nil {
			t.Fatal(err)
		}
	}
	run := wt.StartWorker(t, srv, wt.Client(t, sb, creds...), worker.WithRate(rate, nil),
		worker.WithStreams(worker.StreamSettings{CommandsMaxBytes: 4 << 20, HistoryTrimLag: 500 * time.Millisecond, MaxAckPending: 64}),
		worker.WithParkedTenantShare(fc.share))
	js := wt.JetStream(t, wt.Connect(t, srv))
	wt.AwaitStream(t, js, worker.StreamCommands)
	refused := func(ent, reason string) float64 {
		return testutil.ToFloat64(run.Worker.Metrics().ParkedRefused.WithLabelValues(ent, reason))
	}

	// The flood: five commands a second, an hour ahead, until the steady
	// enterprise is done.
	stop := make(chan struct{})
	var mu sync.Mutex
	var flood []string // the flooding commands stored
	var floodErr error
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(200 * time.Millisecond)
		defer tick.Stop()
		later := time.Now().Add(time.Hour)
		for i := 0; ; i++ {
			ent := flooders[i%len(flooders)]
			id := fmt.Sprintf("%s-%03d", ent, i)
			if err := publishFull(js, id, bigCommand(id, ent, "m-flood", 1600, "notBefore", at(later)), time.Minute); err != nil {
				mu.Lock()
				floodErr = err
				mu.Unlock()
				return
			}
			mu.Lock()
			flood = append(flood, id)
			mu.Unlock()
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		}
	}()
	stopFlood := sync.OnceFunc(func() { close(stop); wg.Wait() })
	defer stopFlood()
	// The flood has taken what it can: a flooder's share, or the stream.
	wt.Eventually(t, 2*time.Minute, func() bool {
		n := 0.0
		for _, ent := range flooders {
			if fc.full {
				n += refused(ent, "stream_full")
			} else {
				n += refused(ent, "over_quota")
			}
		}
		return n > 0
	}, "the flood refused")

	var published []string
	for i := range backlog {
		id := fmt.Sprintf("steady-%03d", i)
		if err := publishFull(js, id, wt.Command(id, fmt.Sprintf("m-steady-%03d", i), "enterpriseId", `"`+steady+`"`), 30*time.Second); err != nil {
			t.Fatalf("the steady enterprise's command not stored: %v", err)
		}
		published = append(published, id)
	}
	var created []time.Time
	defer func() {
		if !t.Failed() {
			return
		}
		statuses := map[string]int{}
		for _, r := range sb.Requests() {
			statuses[fmt.Sprintf("%s %s %d %d", r.EnterpriseID, r.Endpoint, r.Status, r.ErrorCode)]++
		}
		subjects := map[string]int{}
		for _, e := range wt.StoredEvents(t, js) {
			if strings.HasPrefix(e.CommandID(), "steady-") {
				subjects[e.Subject]++
			}
		}
		t.Logf("requests %v; the steady enterprise's events %v", statuses, subjects)
	}()
	wt.Eventually(t, 3*time.Minute, func() bool {
		created = created[:0]
		for _, r := range sb.Requests() {
			if r.EnterpriseID == steady && r.Endpoint == "dynamicGroup" && r.Status == http.StatusOK {
				created = append(created, r.At)
			}
		}
		return len(created) >= len(published)
	}, "the steady enterprise's commands created")
	stopFlood()
	mu.Lock()
	if floodErr != nil {
		t.Errorf("a flooding command not stored: %v", floodErr)
	}
	flooded := append([]string(nil), flood...)
	mu.Unlock()

	// Its rate: over its saturated backlog, from its first creation to its
	// last, against its rate less the limiter's default guard (25 ms a second).
	span := created[len(created)-1].Sub(created[0])
	got := float64(len(created)-1) / span.Seconds()
	own := rate / 1.025
	t.Logf("steady enterprise: %d created in %v, %.2f/s of its %.2f/s (%.1f%%); flood: %d commands stored, %d parked, refused over_quota %v stream_full %v",
		len(created), span.Round(10*time.Millisecond), got, own, 100*got/own, len(flooded), parkedMsgs(t, js),
		sumRefused(refused, flooders, "over_quota"), sumRefused(refused, flooders, "stream_full"))
	if got < 0.95*own {
		t.Errorf("the steady enterprise kept %.2f created/s of its %.2f/s, less than 95%%", got, own)
	}
	if n := refused(steady, "over_quota") + refused(steady, "stream_full"); n > 0 {
		t.Errorf("%v of the steady enterprise's commands refused", n)
	}

	// Every flooding command is parked (its waiting event, no terminal one)
	// or refused (one failed.over_quota), and each parked one is in the stream.
	var evs map[string][]wt.Event
	wt.Eventually(t, time.Minute, func() bool {
		evs = map[string][]wt.Event{}
		for _, e := range wt.StoredEvents(t, js) {
			evs[e.CommandID()] = append(evs[e.CommandID()], e)
		}
		for _, id := range flooded {
			if len(evs[id]) == 0 {
				return false
			}
		}
		return true
	}, "an event for every flooding command")
	waiting, over := 0, 0
	for _, id := range flooded {
		var term []wt.Event
		for _, e := range evs[id] {
			if e.Terminal() {
				term = append(term, e)
			}
		}
		switch {
		case len(term) == 0:
			waiting++
		case len(term) == 1 && term[0].Subject == "xylink.groups.failed.over_quota":
			over++
			dev, _ := term[0].Fields["developerMessage"].(string)
			if fc.full && (!strings.Contains(dev, worker.StreamParked) || !strings.Contains(dev, "--max-bytes")) {
				t.Errorf("%s: over_quota developerMessage %q names neither the parked stream nor how to raise it", id, dev)
			}
		default:
			t.Errorf("%s: terminal events %v, want none (parked) or one failed.over_quota", id, term)
		}
	}
	if n := parkedMsgs(t, js); int(n) != waiting {
		t.Errorf("%d flooding commands wait, the parked stream holds %d", waiting, n)
	}
	if over == 0 || waiting == 0 {
		t.Errorf("%d flooding commands parked, %d refused: want both", waiting, over)
	}
	for _, ent := range flooders {
		if fc.full && refused(ent, "over_quota") > 0 {
			t.Errorf("%s: refused over its share; the stream should have filled first", ent)
		}
		if !fc.full && refused(ent, "stream_full") > 0 {
			t.Errorf("%s: refused for a full stream; its share should have bounded it first", ent)
		}
	}
	if got := sumRefused(refused, flooders, "over_quota") + sumRefused(refused, flooders, "stream_full"); int(got) != over {
		t.Errorf("xygroup_parked_refused_total says %v, %d commands failed over_quota", got, over)
	}
}

func sumRefused(refused func(ent, reason string) float64, ents []string, reason string) float64 {
	n := 0.0
	for _, e := range ents {
		n += refused(e, reason)
	}
	return n
}
