package statuspage_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/xygroup/xygroup/worker"
	"github.com/xygroup/xygroup/worker/statuspage"
	wt "github.com/xygroup/xygroup/worker/workertest"
	"github.com/xygroup/xygroup/xylink/sandbox"
)

// What publishers choose (command ids, meeting numbers, API messages) is
// escaped; without a token the page is read-only; its headers keep other
// origins' scripts and frames out.
func TestStatusPageEscapesAndIsReadOnlyWithoutToken(t *testing.T) {
	sb := wt.StartSandbox(t, sandbox.Config{})
	if _, err := sb.AddMeeting(sandbox.MeetingSpec{Number: "<b>9300001</b>", StartsIn: sandbox.Duration(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	ns := wt.StartNATS(t)
	nc := wt.Connect(t, ns)
	js := wt.JetStream(t, nc)
	w := wt.StartWorkerOn(t, nc, wt.Client(t, sb), worker.WithProbeBackoff(worker.Backoff{Initial: time.Hour, Max: time.Hour}))
	page, err := statuspage.New(statuspage.Options{JS: js, Inspector: w.Worker, DefaultEnterprise: wt.Enterprise})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(page)
	defer srv.Close()

	const evil = `<script>alert(1)</script>`
	wt.Publish(t, js, "", wt.Command("x"+evil, "<b>9300001</b>"))                    // waits: its meeting has not started
	wt.Publish(t, js, "", []byte(`{"commandId":"y`+evil+`","meetingRoomNumber":1}`)) // fails: not a command
	wt.Eventually(t, 30*time.Second, func() bool {
		ms, _ := worker.ParkedMeetings(context.Background(), js)
		return len(ms) == 1 && ms[0].Parked == 1 && wt.TerminalCount(t, js) == 1
	}, "one command waiting, one failed")

	for _, path := range []string{"/", "/?part=live", "/commands/" + url.PathEscape("y"+evil), "/commands/" + url.PathEscape("x"+evil)} {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		body := string(b)
		if resp.StatusCode != http.StatusOK {
			t.Errorf("%s: %s", path, resp.Status)
		}
		if strings.Contains(body, evil) || strings.Contains(body, "<b>9300001") {
			t.Errorf("%s: a publisher's markup is not escaped:\n%s", path, body)
		}
		if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") || !strings.Contains(csp, "frame-ancestors 'none'") {
			t.Errorf("%s: Content-Security-Policy %q", path, csp)
		}
		if strings.Contains(body, `name="token"`) {
			t.Errorf("%s: the replay form shows without a token configured", path)
		}
	}
	resp, err := http.PostForm(srv.URL+"/replay", url.Values{"token": {""}, "class": {"invalid_command"}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("a replay on a read-only page: %s, want 404", resp.Status)
	}
	resp, err = http.Get(srv.URL + "/no/such/page")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("an unknown path: %s, want 404", resp.Status)
	}
}
