package statuspage_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/xygroup/xygroup/worker"
	"github.com/xygroup/xygroup/worker/commands"
	"github.com/xygroup/xygroup/worker/contract"
	"github.com/xygroup/xygroup/worker/statuspage"
	wt "github.com/xygroup/xygroup/worker/workertest"
	"github.com/xygroup/xygroup/xylink/sandbox"
)

// A replay from the page is interrupted (the operator's browser leaves while
// it publishes); the page says "confirm again to resume it", and the same
// confirmation resumes it. Meanwhile the commands it did publish failed
// again, after the selection's end (the dry run closes it at its own time):
// the resumed run finds the list as it was, and every command is replayed.
func TestReplayFromThePageResumesWithoutLosingAny(t *testing.T) {
	sb := wt.StartSandbox(t, sandbox.Config{Rate: 100000, Faults: sandbox.Faults{Fail: &sandbox.FixedAnswer{Status: 400, ErrorCode: 60001, UserMessage: "bad"}}})
	ns := wt.StartNATS(t)
	nc := wt.Connect(t, ns)
	js := wt.JetStream(t, nc)
	w := wt.StartWorkerOn(t, nc, wt.Client(t, sb))
	const token = "tok-1234567890abcdef"
	page, err := statuspage.New(statuspage.Options{JS: js, Inspector: w.Worker, DefaultEnterprise: wt.Enterprise, Token: token, Rate: 10000})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(page)
	defer srv.Close()

	const n = 400
	for i := range n {
		wt.Publish(t, js, "", wt.Command(fmt.Sprintf("c-%04d", i), fmt.Sprintf("95%05d", i)))
	}
	wt.Eventually(t, 120*time.Second, func() bool { return wt.TerminalCount(t, js) == n }, "every command failed")

	_, dry := fetch(t, http.MethodPost, srv.URL+"/replay", url.Values{"token": {token}, "class": {"rejected"}, "since": {"1h"}})
	field := func(name string) string {
		m := regexp.MustCompile(`name="` + name + `" value="([^"]*)"`).FindStringSubmatch(dry)
		if m == nil {
			t.Fatalf("no %s in the dry run:\n%s", name, dry)
		}
		return m[1]
	}
	confirm := url.Values{"step": {"confirm"}, "selection": {field("selection")}, "deadline": {field("deadline")}, "expires": {field("expires")}, "mac": {field("mac")}}
	id := regexp.MustCompile(`Dry run of replay (r[0-9a-f]+)`).FindStringSubmatch(dry)[1]

	// The first confirmation; the browser leaves once some were published: the
	// commands stream holds a replayed command. (Leaving once the checkpoint
	// exists could leave before the first one: the run saves its checkpoint,
	// at 0 done, before it publishes.)
	ctx, cancel := context.WithCancel(context.Background())
	commandsStream, err := js.Stream(ctx, worker.StreamCommands)
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for ctx.Err() == nil {
			if info, err := commandsStream.Info(ctx); err == nil && info.State.Msgs > n {
				cancel()
				return
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, srv.URL+"/replay", strings.NewReader(confirm.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if resp, err := http.DefaultClient.Do(req); err == nil {
		resp.Body.Close()
		t.Logf("the replay of %d commands ended before the browser left: the resumed run has nothing left to do", n)
	}
	var cp *commands.Checkpoint
	wt.Eventually(t, 30*time.Second, func() bool {
		cp, _ = commands.LoadCheckpoint(context.Background(), js, id)
		return cp != nil && cp.Done > 0
	}, "the interrupted replay's checkpoint")
	t.Logf("interrupted: checkpoint done %d of %d", cp.Done, cp.Total)
	// The replayed commands fail again.
	wt.Eventually(t, 60*time.Second, func() bool { return len(replayedBy(t, js, id)) >= cp.Done }, "the replayed commands' outcomes")
	wt.AwaitConsumerIdle(t, js, 60*time.Second)

	// "confirm again to resume it"
	status, body := fetch(t, http.MethodPost, srv.URL+"/replay", confirm)
	pub := regexp.MustCompile(`id="published">(\d+)<`).FindStringSubmatch(body)
	t.Logf("resumed: %d, published %v", status, pub)
	var got map[string]bool
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		if got = replayedBy(t, js, id); len(got) == n {
			break
		}
	}
	if len(got) < n {
		var never []string
		for i := range n {
			if c := fmt.Sprintf("c-%04d", i); !got[c] {
				never = append(never, c)
			}
		}
		t.Errorf("%d of %d selected commands were never replayed by %s, e.g. %v", len(never), n, id, never[:min(5, len(never))])
	}
}

// replayedBy: the commands with an outcome of replay id.
func replayedBy(t *testing.T, js jetstream.JetStream, id string) map[string]bool {
	t.Helper()
	out := map[string]bool{}
	for _, e := range wt.StoredEvents(t, js) {
		if strings.HasSuffix(e.Header.Get(nats.MsgIdHdr), ".replay."+id) && contract.IsTerminal(e.Subject) {
			out[e.CommandID()] = true
		}
	}
	return out
}
