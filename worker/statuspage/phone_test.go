package statuspage_test

import (
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/xygroup/xygroup/worker/statuspage"
	wt "github.com/xygroup/xygroup/worker/workertest"
	"github.com/xygroup/xygroup/xylink"
	"github.com/xygroup/xygroup/xylink/sandbox"
)

// Long ids as the schema allows them (commandId 200, enterpriseId 128,
// meetingRoomNumber 64 characters, no whitespace) on a 390 px phone: the
// command's view must not scroll sideways.
func TestLongIDsFitAPhone(t *testing.T) {
	chrome := browser(t)
	artifacts := artifactsDir(t)
	longEnt := strings.Repeat("e", 128)
	longID := strings.Repeat("c", 200)
	longMeeting := strings.Repeat("9", 64)
	sb := wt.StartSandbox(t, sandbox.Config{Enterprises: []sandbox.Enterprise{{ID: longEnt, Token: "long-tenant-token-1234"}},
		Faults: sandbox.Faults{Fail: &sandbox.FixedAnswer{Status: 400, ErrorCode: 60001, UserMessage: strings.Repeat("x", 300)}}})
	ns := wt.StartNATS(t)
	nc := wt.Connect(t, ns)
	js := wt.JetStream(t, nc)
	w := wt.StartWorkerOn(t, nc, wt.Client(t, sb, xylink.Credentials{EnterpriseID: longEnt, Token: "long-tenant-token-1234"}))
	page, err := statuspage.New(statuspage.Options{JS: js, Inspector: w.Worker, DefaultEnterprise: wt.Enterprise, Token: "tok-1234567890abcdef"})
	if err != nil {
		t.Fatal(err)
	}
	base := serve(t, w, page)
	wt.Publish(t, js, "", wt.Command(longID, longMeeting, "enterpriseId", `"`+longEnt+`"`))
	// A common choice: a SHA-256 in hex as the command id (64 characters).
	hexID := strings.Repeat("0123456789abcdef", 4)
	wt.Publish(t, js, "", wt.Command(hexID, "9100001"))
	wt.Eventually(t, 30*time.Second, func() bool { return wt.TerminalCount(t, js) == 2 }, "the commands failed")

	bctx, cancel := startBrowser(t, chrome)
	defer cancel()
	for _, p := range []struct{ name, path, wait string }{
		{"command-sha256-id", "/commands/" + hexID, "#events"},
		{"overview", "/", "#failures"},
		{"command", "/commands/" + url.PathEscape(longID) + "?enterprise=" + url.QueryEscape(longEnt), "#events"},
	} {
		do(t, bctx, p.name, chromedp.EmulateViewport(390, 844, chromedp.EmulateScale(2), chromedp.EmulateMobile),
			chromedp.Navigate(base+p.path), chromedp.WaitVisible(chromedp.CSS(p.wait)))
		wide, err := chromedp.Run(bctx, chromedp.Evaluate[string](`(function(){var out=[];document.querySelectorAll("body *").forEach(function(e){var r=e.getBoundingClientRect();if(r.right>window.innerWidth+1&&!e.closest(".scroll,pre"))out.push(e.tagName+(e.id?"#"+e.id:"")+" right="+Math.round(r.right));});return document.documentElement.scrollWidth+" > "+window.innerWidth+": "+out.slice(0,6).join(", ");})()`))
		if err != nil {
			t.Fatal(err)
		}
		overflow, _ := chromedp.Run(bctx, chromedp.Evaluate[bool](`document.documentElement.scrollWidth > window.innerWidth`))
		screenshot(t, bctx, artifacts, "long-ids-phone-"+p.name+".png")
		if overflow {
			t.Errorf("%s on a 390 px phone scrolls sideways: %s", p.name, wide)
		}
	}
}
