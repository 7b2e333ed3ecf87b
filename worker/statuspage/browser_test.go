package statuspage_test

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/rs/zerolog"

	"github.com/xygroup/xygroup/worker"
	"github.com/xygroup/xygroup/worker/contract"
	"github.com/xygroup/xygroup/worker/statuspage"
	wt "github.com/xygroup/xygroup/worker/workertest"
	"github.com/xygroup/xygroup/xylink"
	"github.com/xygroup/xygroup/xylink/sandbox"
)

const (
	tenantB      = "tenant-b"
	tenantBToken = "tenant-b-token-9f8e7d6c5b"
	uiToken      = "ui-token-3a4b5c6d7e8f"
	waitingRoom  = "9100001" // starts in an hour: its commands wait
	brokenRoom   = "9100002" // tenant-b's: every call answers 503
	rejectRoom   = "9100003" // answers 400: its command fails
	busyRoom     = "92000"   // + two digits: meetings in progress, whose commands are created
)

// The page, in a real browser, against a worker with the sandbox: a meeting's
// commands waiting, a tenant's breaker open, a failure, the link to the failed
// command's view, a replay from the page, and the page refreshing itself.
// Screenshots and the pages' HTML go to the artifacts folder.
func TestStatusPageInBrowser(t *testing.T) {
	chrome := browser(t)
	artifacts := artifactsDir(t)

	sb := wt.StartSandbox(t, sandbox.Config{Enterprises: []sandbox.Enterprise{{ID: tenantB, Token: tenantBToken}}})
	if _, err := sb.AddMeeting(sandbox.MeetingSpec{Number: waitingRoom, StartsIn: sandbox.Duration(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	if _, err := sb.AddMeeting(sandbox.MeetingSpec{Number: rejectRoom, Fail: &sandbox.FixedAnswer{Status: 400, ErrorCode: 60001, UserMessage: "参数错误"}}); err != nil {
		t.Fatal(err)
	}
	sb.AddOutage(sandbox.Outage{EnterpriseID: tenantB, From: time.Now().Add(-time.Minute), Until: time.Now().Add(time.Hour)})
	client := wt.Client(t, sb, xylink.Credentials{EnterpriseID: tenantB, Token: tenantBToken})

	ns := wt.StartNATS(t)
	nc := wt.Connect(t, ns)
	js := wt.JetStream(t, nc)
	w := wt.StartWorkerOn(t, nc, client, worker.WithRate(20, nil),
		worker.WithBreakerSettings(worker.BreakerSettings{ConsecutiveFailures: 3, OpenFor: time.Hour}),
		worker.WithProbeBackoff(worker.Backoff{Initial: time.Hour, Max: time.Hour}))
	var logs wt.SyncBuffer
	page, err := statuspage.New(statuspage.Options{JS: js, Inspector: w.Worker, DefaultEnterprise: wt.Enterprise, Token: uiToken,
		Refresh: 500 * time.Millisecond, Log: zerolog.New(&logs)})
	if err != nil {
		t.Fatal(err)
	}
	base := serve(t, w, page)

	// The scenario: created commands (the budget's use), three commands
	// waiting for their meeting, tenant-b's breaker open with its commands
	// held, and one rejected command.
	for i := range 20 {
		wt.Publish(t, js, "", wt.Command(fmt.Sprintf("busy-%02d", i), fmt.Sprintf("%s%02d", busyRoom, i)))
	}
	for i := range 3 {
		wt.Publish(t, js, "", wt.Command(fmt.Sprintf("wait-%d", i), waitingRoom))
	}
	for i := range 4 {
		wt.Publish(t, js, "", wt.Command(fmt.Sprintf("b-%d", i), brokenRoom, "enterpriseId", `"`+tenantB+`"`))
	}
	wt.Publish(t, js, "", wt.Command("rejected-1", rejectRoom))
	ctx := context.Background()
	wt.Eventually(t, 60*time.Second, func() bool {
		ms, _ := worker.ParkedMeetings(ctx, js)
		bs, _ := worker.Breakers(ctx, js)
		waiting, held, open := false, false, false
		for _, m := range ms {
			waiting = waiting || (m.Meeting == waitingRoom && m.Parked == 3)
			held = held || (m.Kind == "breaker" && m.EnterpriseID == tenantB && m.Parked > 0)
		}
		for _, b := range bs {
			open = open || (b.EnterpriseID == tenantB && b.State == "open")
		}
		return waiting && held && open && wt.TerminalCount(t, js) == 21
	}, "3 commands waiting, tenant-b's breaker open and its commands held, 20 created and 1 failed")

	// The browser, and what its console reports.
	bctx, cancel := startBrowser(t, chrome, chromedp.WindowSize(1280, 900))
	defer cancel()
	var mu sync.Mutex
	var console []string
	consoleDone := make(chan struct{})
	messages := chromedp.Console(bctx)
	go func() {
		defer close(consoleDone)
		for m, err := range messages {
			if err != nil {
				return
			}
			// The refused replay's 403 is the one error the test causes.
			refused := strings.HasSuffix(m.URL, "/replay") && strings.Contains(m.Text, "403")
			if (m.Type == chromedp.ConsoleError || m.Type == chromedp.ConsoleWarning || m.IsException()) && !refused {
				mu.Lock()
				console = append(console, fmt.Sprintf("%s (%s %s:%d)", m, m.Source, m.URL, m.Line))
				mu.Unlock()
			}
		}
	}()

	do(t, bctx, "the overview", chromedp.Navigate(base+"/"), chromedp.WaitVisible(chromedp.CSS(`#meetings article.meeting`)))
	expect(t, "meetings", text(t, bctx, "#meetings"), "Meeting "+waitingRoom, "3 command(s)", "next probe")
	expect(t, "holds", text(t, bctx, "#holds"), tenantB+": breaker open", "its calls failed", "last failure: platform unavailable", "next probe")
	expect(t, "failures", text(t, bctx, "#failures"), "rejected", "rejected-1", "HTTP 400", "code 60001")
	expect(t, "budget", text(t, bctx, "#budget"), wt.Enterprise, "of 20/s", "most in a second (last minute): max ")
	do(t, bctx, "the waiting meeting's commands",
		chromedp.Click(chromedp.CSS(`#meetings article.meeting summary`)),
		chromedp.WaitVisible(chromedp.CSS(`#meetings a[href^="/commands/wait-0"]`)),
	)
	screenshot(t, bctx, artifacts, "statuspage-overview.png")

	// The page refreshes itself: a fourth command joins the waiting meeting
	// and shows without a reload.
	wt.Publish(t, js, "", wt.Command("wait-3", waitingRoom))
	if _, err := chromedp.Run(bctx, chromedp.Poll[chromedp.Void](`document.querySelector("#meetings").textContent.includes("4 command(s)")`,
		chromedp.WithPollingTimeout(30*time.Second))); err != nil {
		t.Fatalf("the page did not refresh itself: %v", err)
	}

	// The failed command's view, by its link.
	do(t, bctx, "the failed command's view",
		chromedp.Click(chromedp.CSS(`#failures a[href^="/commands/rejected-1"]`)),
		chromedp.WaitVisible(chromedp.CSS(`#events article.event`)),
	)
	expect(t, "the command's view", text(t, bctx, "main"), "rejected-1", contract.SubjectFailed+".rejected", "Calls made", "HTTP 400", "code 60001")
	screenshot(t, bctx, artifacts, "statuspage-command.png")

	// A replay from the page: a wrong token is refused; the right one shows
	// the dry run, and the confirmation publishes the command again.
	do(t, bctx, "a replay with a wrong token",
		chromedp.Navigate(base+"/"),
		chromedp.WaitVisible(chromedp.CSS(`#replay form`)),
		chromedp.SetValue(chromedp.CSS(`#replay input[name=token]`), "wrong"),
		chromedp.SetValue(chromedp.CSS(`#replay input[name=meeting]`), rejectRoom),
		chromedp.Click(chromedp.CSS(`#replay button[type=submit]`)),
		chromedp.WaitVisible(chromedp.CSS(`p.error`)),
	)
	expect(t, "the refused replay", text(t, bctx, "p.error"), "wrong or missing token")
	do(t, bctx, "the replay's dry run",
		chromedp.SetValue(chromedp.CSS(`#replay input[name=token]`), uiToken),
		chromedp.Click(chromedp.CSS(`#replay input[value=rejected]`)),
		chromedp.Click(chromedp.CSS(`#replay button[type=submit]`)),
		chromedp.WaitVisible(chromedp.CSS(`#selected`)),
	)
	expect(t, "the dry run", text(t, bctx, "#replay-result"), "1 command(s) would be replayed", "rejected-1")
	screenshot(t, bctx, artifacts, "statuspage-replay-dry-run.png")
	before := wt.TerminalCount(t, js)
	do(t, bctx, "the replay", chromedp.Click(chromedp.CSS(`#replay-result button.danger`)), chromedp.WaitVisible(chromedp.CSS(`#published`)))
	if done := strings.TrimSpace(text(t, bctx, "#published")); done != "1" {
		t.Errorf("the replay published %q command(s), want 1", done)
	}
	wt.Eventually(t, 30*time.Second, func() bool { return wt.TerminalCount(t, js) == before+1 }, "the replayed command's new failed event")

	// On a phone.
	do(t, bctx, "the overview on a phone", chromedp.EmulateViewport(390, 844, chromedp.EmulateScale(2), chromedp.EmulateMobile),
		chromedp.Navigate(base+"/"), chromedp.WaitVisible(chromedp.CSS(`#meetings article.meeting`)))
	overflow, err := chromedp.Run(bctx, chromedp.Evaluate[bool](`document.documentElement.scrollWidth > window.innerWidth`))
	if err != nil {
		t.Fatal(err)
	}
	if overflow {
		t.Errorf("on a 390 px wide screen the page scrolls sideways")
	}
	screenshot(t, bctx, artifacts, "statuspage-phone.png")

	cancel() // the browser stops; its console's messages are all read
	<-consoleDone
	mu.Lock()
	if len(console) > 0 {
		t.Errorf("the browser's console reported:\n%s", strings.Join(console, "\n"))
	}
	mu.Unlock()

	// The HTML as served: valid, and without a secret.
	pages := map[string]string{
		"overview.html": base + "/",
		"live.html":     base + "/?part=live",
		"command.html":  base + "/commands/rejected-1?enterprise=" + wt.Enterprise,
		"unknown.html":  base + "/commands/no-such-command",
	}
	var files []string
	bodies := map[string]string{}
	for name, url := range pages {
		_, bodies[name] = fetch(t, http.MethodGet, url, nil)
	}
	code, dry := fetch(t, http.MethodPost, base+"/replay", url.Values{"token": {uiToken}, "class": {"rejected"}, "since": {"1h"}})
	if code != http.StatusOK {
		t.Fatalf("a dry run: %d\n%s", code, dry)
	}
	bodies["replay.html"] = dry
	for name, body := range bodies {
		for _, secret := range []string{wt.Token, tenantBToken, uiToken} {
			if strings.Contains(body, secret) {
				t.Errorf("%s shows a secret", name)
			}
		}
		if name == "live.html" { // a fragment: validated as part of the page
			continue
		}
		path := filepath.Join(artifacts, name)
		if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		files = append(files, path)
	}
	validateHTML(t, files...)
	if strings.Contains(logs.String(), uiToken) {
		t.Errorf("the page's log shows the token")
	}
}

// stepTimeout bounds one step in the browser, so that a page that never
// shows what a step waits for fails the test instead of hanging it.
const stepTimeout = 45 * time.Second

func do(t *testing.T, ctx context.Context, what string, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, stepTimeout)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

func text(t *testing.T, ctx context.Context, css string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, stepTimeout)
	defer cancel()
	s, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(css)))
	if err != nil {
		t.Fatalf("the text of %s: %v", css, err)
	}
	return s
}

func expect(t *testing.T, what, text string, want ...string) {
	t.Helper()
	for _, w := range want {
		if !strings.Contains(text, w) {
			t.Errorf("%s: %q not shown in:\n%s", what, w, text)
		}
	}
}

func screenshot(t *testing.T, ctx context.Context, dir, name string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, stepTimeout)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot %s: %v", name, err)
	}
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s", path)
}

// serve runs the page on the worker's health server, as the binary does,
// and returns its base URL.
func serve(t *testing.T, w *wt.Running, page *statuspage.Handler) string {
	t.Helper()
	hs, err := worker.StartHealthServer("127.0.0.1:0", w.Metrics(), w.Checks(), worker.WithPage(page))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = hs.Close(context.Background()) })
	return "http://" + hs.Addr()
}

// startBrowser starts headless Chromium with the flags this machine's closed
// network needs, and returns a context whose steps run in its tab.
func startBrowser(t *testing.T, chrome string, extra ...chromedp.ExecAllocatorOption) (context.Context, context.CancelFunc) {
	t.Helper()
	actx, stopAlloc := chromedp.NewExecAllocator(context.Background(), append(append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chrome), chromedp.NoSandbox, chromedp.DisableGPU, chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true), chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true), chromedp.NoFirstRun, chromedp.UserDataDir(t.TempDir())), extra...)...)
	bctx, stopTab := chromedp.NewContext(actx)
	if err := chromedp.Do(bctx); err != nil { // the browser starts on bctx, not on a step's shorter context
		stopTab()
		stopAlloc()
		t.Fatal(err)
	}
	return bctx, func() { stopTab(); stopAlloc() }
}

// required: CI sets XYGROUP_REQUIRE_BROWSER=1, so that a missing browser or
// HTML checker fails there instead of skipping.
func required() bool { return os.Getenv("XYGROUP_REQUIRE_BROWSER") == "1" }

// browser finds Chromium ($CHROME_BIN, else chromium on the PATH).
func browser(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("CHROME_BIN"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if required() {
		t.Fatal("no Chromium: install Debian's chromium (apt-get install chromium) or set CHROME_BIN")
	}
	t.Skip("no Chromium on this machine (apt-get install chromium, or set CHROME_BIN); .ci/run installs it")
	return ""
}

// artifactsDir is $XYGROUP_TEST_ARTIFACTS/statuspage, else artifacts/statuspage
// at the repository's root.
func artifactsDir(t *testing.T) string {
	t.Helper()
	root := os.Getenv("XYGROUP_TEST_ARTIFACTS")
	if root == "" {
		root = filepath.Join("..", "..", "artifacts")
	}
	dir, err := filepath.Abs(filepath.Join(root, "statuspage"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// validateHTML runs html-validate (installed by `npm ci` in
// testdata/htmlcheck, as .ci/run does) on the files.
func validateHTML(t *testing.T, files ...string) {
	t.Helper()
	bin, _ := filepath.Abs(filepath.Join("testdata", "htmlcheck", "node_modules", ".bin", "html-validate"))
	if _, err := os.Stat(bin); err != nil {
		if required() {
			t.Fatalf("no HTML checker at %s: run npm ci --prefix worker/statuspage/testdata/htmlcheck", bin)
		}
		t.Logf("HTML not checked: no html-validate (npm ci --prefix worker/statuspage/testdata/htmlcheck installs it)")
		return
	}
	out, err := exec.Command(bin, append([]string{"--config", filepath.Join("testdata", "htmlcheck", "htmlvalidate.json")}, files...)...).CombinedOutput()
	if err != nil {
		t.Errorf("html-validate: %v\n%s", err, out)
	}
}
