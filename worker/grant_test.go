package worker_test

import (
	"fmt"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/xygroup/xygroup/worker"
	wt "github.com/xygroup/xygroup/worker/workertest"
	"github.com/xygroup/xygroup/xylink"
	"github.com/xygroup/xygroup/xylink/sandbox"
)

// Signature 2.0 behind a token endpoint that answers in 200 ms, with tokens that
// live 2 s (renewed every 1.5 s) and that the platform also revokes twice
// mid-run (every call then meets 401 once and is repeated with a new token).
// Each request, the repeat after a refused token included, takes its own grant
// right before it leaves, after the token is in hand: the API never sees more
// than its 20 requests in any sliding second.
func TestGrantIsTakenRightBeforeEachRequest(t *testing.T) {
	const ent, clientID, secret = "ent-v2", "client-v2", "client-secret-v2-0123456789"
	srv := wt.StartNATS(t)
	sb := wt.StartSandbox(t, sandbox.Config{Rate: 20, TokenTTL: 2 * time.Second,
		Enterprises: []sandbox.Enterprise{{ID: ent, ClientID: clientID, ClientSecret: secret}}})
	base := faultProxy{before: func(r *http.Request) {
		if isTokenEndpoint(r) {
			time.Sleep(200 * time.Millisecond) // the fault itself: a slow token endpoint
		}
	}}.start(t, sb.URL)
	c, err := xylink.NewClient(base, xylink.WithTenants(xylink.Credentials{EnterpriseID: ent, ClientID: clientID,
		ClientSecret: secret, SignType: xylink.SignHMACSHA256}))
	if err != nil {
		t.Fatal(err)
	}
	// The in-process sandbox's arrival times carry the loaded host's
	// scheduling delay, which the guard allows for: 40 ms, as the e2e
	// suite's workers run with (a grant taken before the 200 ms token fetch
	// would still bunch the calls past it).
	for range 2 {
		wt.StartWorker(t, srv, c, worker.WithRate(20, nil), worker.WithDefaultEnterprise(ent), worker.WithConcurrency(8),
			worker.WithRateGuard(40*time.Millisecond))
	}
	js := wt.JetStream(t, wt.Connect(t, srv))
	wt.AwaitStream(t, js, worker.StreamCommands)
	const n = 200
	for i := range n {
		id := fmt.Sprintf("grant-%03d", i)
		wt.Publish(t, js, id, wt.Command(id, "m-"+id))
	}
	// The platform revokes the tokens after 60 and 120 creates.
	var revoked atomic.Int32
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for _, after := range []int{60, 120} {
			for sb.Stats().ByAnswer["200"] < after {
				select {
				case <-stop:
					return
				case <-time.After(20 * time.Millisecond):
				}
			}
			sb.ExpireTokens()
			revoked.Add(1)
		}
	}()
	events := wt.AwaitTerminal(t, js, n, 3*time.Minute)
	for id, evs := range events {
		if len(evs) != 1 || evs[0].Subject != worker.SubjectCreated {
			t.Errorf("%s: %d events, first on %s: %s", id, len(evs), evs[0].Subject, evs[0].Data)
		}
	}
	st := sb.Stats()
	e := st.Enterprises[ent]
	t.Logf("%d commands, %d requests (%d tokens issued, %d revocations): max %d requests in a sliding second (limit 20); answers %v",
		n, e.Requests, st.TokenIssues, revoked.Load(), e.MaxInWindow, st.ByAnswer)
	if e.MaxInWindow > 20 || st.ByAnswer["429"] > 0 {
		t.Fatalf("max window %d > 20 (%d answered 429)", e.MaxInWindow, st.ByAnswer["429"])
	}
}
