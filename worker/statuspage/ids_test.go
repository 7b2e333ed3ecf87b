package statuspage_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/xygroup/xygroup/worker"
	"github.com/xygroup/xygroup/worker/statuspage"
	wt "github.com/xygroup/xygroup/worker/workertest"
	"github.com/xygroup/xygroup/xylink/sandbox"
)

func fetch(t *testing.T, method, u string, form url.Values) (int, string) {
	t.Helper()
	var resp *http.Response
	var err error
	if method == http.MethodPost {
		resp, err = http.PostForm(u, form)
	} else {
		resp, err = http.Get(u)
	}
	if err != nil {
		t.Fatalf("%s %s: %v", method, u, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// Command ids a publisher may choose (the schema forbids only whitespace):
// the overview's link to each failed command, followed as a browser does
// (dot segments resolved), must show that command.
func TestCommandLinksForAnyID(t *testing.T) {
	sb := wt.StartSandbox(t, sandbox.Config{Rate: 100000, Faults: sandbox.Faults{Fail: &sandbox.FixedAnswer{Status: 400, ErrorCode: 60001, UserMessage: "bad"}}})
	ns := wt.StartNATS(t)
	nc := wt.Connect(t, ns)
	js := wt.JetStream(t, nc)
	w := wt.StartWorkerOn(t, nc, wt.Client(t, sb))
	page, err := statuspage.New(statuspage.Options{JS: js, Inspector: w.Worker, DefaultEnterprise: wt.Enterprise})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(page)
	defer srv.Close()
	ids := []string{"..", ".", "a/b", "a/../b", "50%", "a?b#c", "%2e%2e", "a\\b", "x&y=z"}
	for _, id := range ids {
		wt.Publish(t, js, "", wt.Command(id, "9500001"))
	}
	// Commands without a usable id: named by their Nats-Msg-Id, or their place in the stream.
	wt.Publish(t, js, "", []byte(`not json`))
	wt.Publish(t, js, "", []byte(`{"commandId":"","meetingRoomNumber":"9"}`))
	wt.Publish(t, js, "m/..", []byte(`{"meetingRoomNumber":"9"}`))
	wt.Publish(t, js, "", []byte(`{"commandId":"has space","meetingRoomNumber":"9"}`))
	extra := 4
	wt.Eventually(t, 10*time.Second, func() bool { return wt.TerminalCount(t, js) == len(ids)+extra }, "every command failed")
	t.Logf("terminal events: %d", wt.TerminalCount(t, js))
	_, body := fetch(t, http.MethodGet, srv.URL+"/", nil)
	base, _ := url.Parse(srv.URL + "/")
	hrefs := regexp.MustCompile(`href="(/commands/[^"]*)"`).FindAllStringSubmatch(body, -1)
	if len(hrefs) != len(ids)+extra {
		t.Errorf("%d links to commands, want %d:\n%s", len(hrefs), len(ids)+extra, body)
	}
	for _, h := range hrefs {
		raw := strings.ReplaceAll(h[1], "&amp;", "&")
		ref, err := url.Parse(raw)
		if err != nil {
			t.Errorf("link %q: %v", raw, err)
			continue
		}
		u := base.ResolveReference(ref) // what a browser requests
		status, body := fetch(t, http.MethodGet, u.String(), nil)
		if status != http.StatusOK || !strings.Contains(body, `<section id="events"`) || !strings.Contains(body, `<article class="event">`) {
			title := regexp.MustCompile(`<title>([^<]*)</title>`).FindStringSubmatch(body)
			t.Errorf("link %q, requested as %q: %d, page %q", raw, u.RequestURI(), status, title)
		}
	}
}

// A page over a NATS server where no worker has started yet (no stream, no
// bucket): an answer that says so, never a 500 or a panic, valid HTML.
func TestPagesOnAnEmptyCluster(t *testing.T) {
	ns := wt.StartNATS(t)
	js := wt.JetStream(t, wt.Connect(t, ns))
	page, err := statuspage.New(statuspage.Options{JS: js, DefaultEnterprise: wt.Enterprise, Token: "tok-1234567890abcdef7890abcdef"})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(page)
	defer srv.Close()
	dir := t.TempDir()
	var files []string
	for _, c := range []struct {
		name, method, path string
		form               url.Values
	}{
		{"overview.html", "GET", "/", nil},
		{"command.html", "GET", "/commands/x", nil},
		{"dryrun.html", "POST", "/replay", url.Values{"token": {"tok-1234567890abcdef7890abcdef"}, "class": {"unavailable"}}},
		{"confirm.html", "POST", "/replay", url.Values{"step": {"confirm"}}},
	} {
		status, body := fetch(t, c.method, srv.URL+c.path, c.form)
		t.Logf("%s %s: %d %s", c.method, c.path, status, regexp.MustCompile(`class="error"[^>]*>([^<]*)`).FindString(body))
		if status >= 500 && status != http.StatusServiceUnavailable || !strings.HasPrefix(body, "<!DOCTYPE html>") {
			t.Errorf("%s %s: %d\n%s", c.method, c.path, status, body)
		}
		p := filepath.Join(dir, c.name)
		_ = os.WriteFile(p, []byte(body), 0o644)
		files = append(files, p)
	}
	validateHTML(t, files...)
	// The live parts the script swaps in (it accepts a 503): the error must be in them,
	// else the page's content vanishes and the stamp says "as of" now.
	for _, p := range []string{"/?part=live", "/commands/x?part=live"} {
		status, body := fetch(t, http.MethodGet, srv.URL+p, nil)
		if status == http.StatusServiceUnavailable && !strings.Contains(body, `class="error"`) {
			t.Errorf("GET %s: 503 with no error shown, the fragment is %q", p, strings.TrimSpace(body))
		}
	}
	_ = context.Background
	_ = worker.ParkedMeetings
}

// Wrong tokens, many at once: each is answered at once (403 while the
// limiter allows, then 429), none waits for the limiter.
func TestWrongTokensAnsweredAtOnce(t *testing.T) {
	ns := wt.StartNATS(t)
	js := wt.JetStream(t, wt.Connect(t, ns))
	page, err := statuspage.New(statuspage.Options{JS: js, DefaultEnterprise: wt.Enterprise, Token: "tok-1234567890abcdef7890abcdef"})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(page)
	defer srv.Close()
	client := &http.Client{Timeout: 10 * time.Second}
	var mu sync.Mutex
	codes := map[int]int{}
	var wg sync.WaitGroup
	for i := range 40 {
		wg.Go(func() {
			code := 0
			resp, err := client.PostForm(srv.URL+"/replay", url.Values{"token": {"guess-" + strconv.Itoa(i)}, "class": {"unavailable"}})
			if err == nil {
				code = resp.StatusCode
				resp.Body.Close()
			}
			mu.Lock()
			codes[code]++
			mu.Unlock()
		})
	}
	wg.Wait()
	t.Logf("40 wrong tokens at once: %v", codes)
	if codes[http.StatusForbidden]+codes[http.StatusTooManyRequests] != 40 {
		t.Errorf("answers %v: every wrong token is answered 403 or 429", codes)
	}
	if codes[http.StatusTooManyRequests] < 20 {
		t.Errorf("answers %v: most of 40 guesses at once are refused by the limiter", codes)
	}
}

// Markup in every field a publisher or a form controls, in every context the
// page puts them (text, href, value, title, data-live), and in the replay
// form's reflected fields.
func TestMarkupEscapedEverywhere(t *testing.T) {
	const evil = `"'><svg onload=alert(1)>`
	sb := wt.StartSandbox(t, sandbox.Config{Rate: 100000, Faults: sandbox.Faults{Fail: &sandbox.FixedAnswer{Status: 400, ErrorCode: 60001, UserMessage: "msg" + evil}}})
	ns := wt.StartNATS(t)
	nc := wt.Connect(t, ns)
	js := wt.JetStream(t, nc)
	w := wt.StartWorkerOn(t, nc, wt.Client(t, sb))
	page, err := statuspage.New(statuspage.Options{JS: js, Inspector: w.Worker, DefaultEnterprise: wt.Enterprise, Token: "tok-1234567890abcdef7890abcdef"})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(page)
	defer srv.Close()
	wt.Publish(t, js, "", wt.Command("c1"+evil, "m1"+evil))                                            // API answers with markup
	wt.Publish(t, js, "", wt.Command("c2"+evil, "m2"+evil, "enterpriseId", strconv.Quote("ent"+evil))) // unknown tenant
	wt.Publish(t, js, "", []byte(`{"commandId":"c3`+strings.ReplaceAll(evil, `"`, `\"`)+`","meetingRoomNumber":"`+strings.ReplaceAll(evil, `"`, `\"`)+`"}`))
	wt.Eventually(t, 30*time.Second, func() bool { return wt.TerminalCount(t, js) == 3 }, "three failures")
	dir := t.TempDir()
	var files []string
	check := func(what, body string) {
		if strings.Contains(body, "<svg onload") || strings.Contains(body, `"'>`) || strings.Contains(body, "tok-1234567890abcdef7890abcdef") {
			i := max(strings.Index(body, "<svg onload"), strings.Index(body, `"'>`))
			t.Errorf("%s: unescaped: …%s…", what, body[max(0, i-200):min(len(body), i+100)])
		}
	}
	for _, p := range []string{"/", "/?part=live",
		"/commands/" + url.PathEscape("c1"+evil), "/commands/" + url.PathEscape("c2"+evil) + "?enterprise=" + url.QueryEscape("ent"+evil),
		"/commands/" + url.PathEscape("c1"+evil) + "?part=live&enterprise=" + url.QueryEscape(evil)} {
		_, body := fetch(t, http.MethodGet, srv.URL+p, nil)
		check(p, body)
		if !strings.Contains(p, "part=live") {
			f := filepath.Join(dir, strconv.Itoa(len(files))+".html")
			_ = os.WriteFile(f, []byte(body), 0o644)
			files = append(files, f)
		}
		if p == "/" && strings.Count(body, "&lt;svg onload") < 5 {
			t.Errorf("the overview does not show the markup escaped: %d times", strings.Count(body, "&lt;svg onload"))
		}
	}
	for _, f := range []url.Values{
		{"token": {"tok-1234567890abcdef7890abcdef"}, "class": {"rejected", evil}, "enterprise": {evil}, "meeting": {evil}, "since": {"1h"}, "deadline": {"30m"}},
		{"token": {"tok-1234567890abcdef7890abcdef"}, "class": {"rejected"}, "since": {evil}},
		{"token": {"tok-1234567890abcdef7890abcdef"}, "class": {"rejected"}, "deadline": {evil}},
		{"token": {evil}, "class": {"rejected"}, "enterprise": {evil}},
		{"step": {"confirm"}, "selection": {evil}, "mac": {evil}},
	} {
		_, body := fetch(t, http.MethodPost, srv.URL+"/replay", f)
		check("POST /replay "+f.Encode(), body)
		p := filepath.Join(dir, strconv.Itoa(len(files))+".html")
		_ = os.WriteFile(p, []byte(body), 0o644)
		files = append(files, p)
	}
	validateHTML(t, files...)
}
