package statuspage

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/xygroup/xygroup/worker/clusterstatus"
	"github.com/xygroup/xygroup/worker/commands"
)

var errForged = errors.New("this confirmation was not made by this page's dry run: start again from the dry run")

// replayFor bounds a replay from the page (its dry run, or its run).
const replayFor = time.Minute

// A dry run's confirmation stays valid this long.
const confirmFor = 10 * time.Minute

// itemsShown bounds the commands a dry run lists.
const itemsShown = 50

// replayForm is the form on the overview (its values when shown again).
type replayForm struct {
	Classes    []string
	Chosen     map[string]bool
	Enterprise string
	Meeting    string
	Since      string
	Deadline   string
}

type replayData struct {
	page
	Form      replayForm
	Selection commands.Selection
	ID        string
	Items     []commands.ReplayItem
	Total     int
	ByClass   map[string]int
	Estimate  time.Duration
	Resumed   *commands.Checkpoint
	// Confirm carries the selection, signed, to the second step.
	Confirm *confirmation
	Summary *commands.Summary
	Done    bool
}

type confirmation struct {
	Selection string // base64 of its JSON
	Deadline  string
	Expires   string
	MAC       string
}

func (h *Handler) replay(w http.ResponseWriter, r *http.Request) {
	if h.opts.Token == "" {
		http.Error(w, "replay from the page is off: start the worker with XYGROUP_UI_TOKEN set to enable it", http.StatusNotFound)
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
	if err := r.ParseForm(); err != nil {
		http.Error(w, "the form could not be read: "+err.Error(), http.StatusBadRequest)
		return
	}
	// Every attempt is paid for before the token or the confirmation is
	// compared, so that the answers tell nothing about either.
	if !h.guesses.allow(clientOf(r)) {
		w.Header().Set("Retry-After", strconv.Itoa(int(guessClientEvery/time.Second)))
		http.Error(w, "too many replay attempts from here: try again in a minute", http.StatusTooManyRequests)
		return
	}
	// A replay publishes for up to a minute before it answers.
	_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(replayFor + 15*time.Second))
	d := &replayData{page: h.basePage("replay", "")}
	confirming := r.PostForm.Get("step") == "confirm"
	wrongToken := !confirming && !h.tokenGiven(r.PostForm.Get("token"))
	// Past the limiter: a wrong token reads NATS (the classes) a few times a
	// minute at most.
	d.Form = replayForm{Classes: h.classes(r.Context()), Chosen: map[string]bool{}, Enterprise: strings.TrimSpace(r.PostForm.Get("enterprise")),
		Meeting: strings.TrimSpace(r.PostForm.Get("meeting")), Since: strings.TrimSpace(r.PostForm.Get("since")), Deadline: strings.TrimSpace(r.PostForm.Get("deadline"))}
	for _, c := range r.PostForm["class"] {
		d.Form.Chosen[c] = true
	}
	if wrongToken {
		d.Err = "wrong or missing token: the replay needs the token the worker was started with (XYGROUP_UI_TOKEN)"
		h.render(w, http.StatusForbidden, "replay", d)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), replayFor)
	defer cancel()
	if confirming {
		h.confirm(ctx, w, r, d)
		return
	}
	sel, deadline, err := d.Form.selection(time.Now())
	if err != nil {
		d.Err = err.Error()
		h.render(w, http.StatusBadRequest, "replay", d)
		return
	}
	h.dryRun(ctx, w, d, sel, deadline)
}

// classes are the classes the replay form offers.
func (h *Handler) classes(ctx context.Context) []string {
	byClass := map[string]uint64{}
	if f, err := clusterstatus.RecentFailures(ctx, h.opts.JS, 0, 0); err == nil {
		byClass = f.ByClass
	}
	return replayClasses(byClass)
}

// tokenGiven compares in constant time, once the attempt was paid for
// (h.guesses): beyond each client's and all clients' budgets, attempts are
// answered 429 before anything is compared or read from NATS.
func (h *Handler) tokenGiven(given string) bool {
	a, b := sha256.Sum256([]byte(given)), sha256.Sum256([]byte(h.opts.Token))
	return subtle.ConstantTimeCompare(a[:], b[:]) == 1
}

func (f replayForm) selection(now time.Time) (commands.Selection, time.Time, error) {
	// The selection ends now, to the second rounded up: the commands it
	// replays fail again after it, and must not move in it (a resumed replay
	// goes on from its place in the list).
	end := now.UTC().Truncate(time.Second)
	if end.Before(now) {
		end = end.Add(time.Second)
	}
	sel := commands.Selection{Source: "failed", Enterprise: f.Enterprise, Meeting: f.Meeting, Until: end}
	for _, c := range f.Classes {
		if f.Chosen[c] {
			sel.Classes = append(sel.Classes, c)
		}
	}
	if len(sel.Classes) == 0 {
		return sel, time.Time{}, errors.New("choose at least one class to replay")
	}
	if f.Since != "" {
		if d, err := time.ParseDuration(f.Since); err == nil && d > 0 {
			sel.Since = end.Add(-d)
		} else if t, err := time.Parse(time.RFC3339, f.Since); err == nil {
			sel.Since = t.UTC()
		} else {
			return sel, time.Time{}, fmt.Errorf("since %q: give a duration (24h) or a time (RFC 3339)", f.Since)
		}
	}
	var deadline time.Time
	if f.Deadline != "" {
		if d, err := time.ParseDuration(f.Deadline); err == nil && d > 0 {
			deadline = now.Add(d).UTC().Truncate(time.Second)
		} else if t, err := time.Parse(time.RFC3339, f.Deadline); err == nil && t.After(now) {
			deadline = t.UTC()
		} else {
			return sel, time.Time{}, fmt.Errorf("deadline %q: give a duration from now (30m) or a time to come (RFC 3339)", f.Deadline)
		}
	}
	return sel, deadline, nil
}

func (h *Handler) dryRun(ctx context.Context, w http.ResponseWriter, d *replayData, sel commands.Selection, deadline time.Time) {
	d.Selection, d.ID = sel, sel.ID()
	items, err := commands.Select(ctx, h.opts.JS, sel)
	if err != nil {
		d.Err = "select: " + err.Error()
		h.render(w, http.StatusServiceUnavailable, "replay", d)
		return
	}
	d.Total, d.ByClass = len(items), commands.Classes(items)
	d.Items = items[:min(len(items), itemsShown)]
	d.Estimate = max(time.Second, time.Duration(float64(len(items))/h.opts.Rate*float64(time.Second)).Round(time.Second))
	if cp, err := commands.LoadCheckpoint(ctx, h.opts.JS, d.ID); err == nil && cp != nil {
		d.Resumed = cp
	}
	if len(items) > 0 {
		d.Confirm = h.sign(sel, deadline, time.Now().Add(confirmFor))
	}
	h.render(w, http.StatusOK, "replay", d)
}

func (h *Handler) confirm(ctx context.Context, w http.ResponseWriter, r *http.Request, d *replayData) {
	sel, deadline, err := h.verify(confirmation{Selection: r.PostForm.Get("selection"), Deadline: r.PostForm.Get("deadline"),
		Expires: r.PostForm.Get("expires"), MAC: r.PostForm.Get("mac")})
	if err != nil {
		d.Err = err.Error()
		h.render(w, http.StatusForbidden, "replay", d)
		return
	}
	d.Selection, d.ID = sel, sel.ID()
	items, err := commands.Select(ctx, h.opts.JS, sel)
	if err != nil {
		d.Err = "select: " + err.Error()
		h.render(w, http.StatusServiceUnavailable, "replay", d)
		return
	}
	cp, err := commands.LoadCheckpoint(ctx, h.opts.JS, d.ID)
	if err != nil {
		d.Err = "load the replay's progress: " + err.Error()
		h.render(w, http.StatusServiceUnavailable, "replay", d)
		return
	}
	if cp == nil {
		cp = &commands.Checkpoint{ID: d.ID, Selection: sel, Deadline: deadline}
	} else if !deadline.IsZero() {
		cp.Deadline = deadline
	}
	h.opts.Log.Info().Str("replay", d.ID).Int("commands", len(items)).Strs("classes", sel.Classes).Msg("status page: replay started")
	rp := &commands.Replayer{JS: h.opts.JS, Deadline: cp.Deadline, DefaultEnterprise: h.opts.DefaultEnterprise}
	waited, stop := context.WithCancel(ctx)
	stop() // publish only: the outcomes arrive as events, on the page
	sum, err := rp.Run(ctx, waited, cp, items)
	d.Total, d.Summary, d.Done = len(items), &sum, true
	if err != nil {
		d.Err = fmt.Sprintf("replay %s stopped: %v; confirm again to resume it", d.ID, err)
		h.render(w, http.StatusServiceUnavailable, "replay", d)
		return
	}
	h.render(w, http.StatusOK, "replay", d)
}

// sign makes the confirmation of a dry run: the selection, signed with the
// token, so that the second step needs no token in the page.
func (h *Handler) sign(sel commands.Selection, deadline, expires time.Time) *confirmation {
	b, _ := json.Marshal(sel)
	c := &confirmation{Selection: base64.RawURLEncoding.EncodeToString(b), Expires: strconv.FormatInt(expires.Unix(), 10)}
	if !deadline.IsZero() {
		c.Deadline = deadline.Format(time.RFC3339)
	}
	c.MAC = h.mac(c)
	return c
}

func (h *Handler) mac(c *confirmation) string {
	m := hmac.New(sha256.New, []byte("xygroup status page replay\x00"+h.opts.Token))
	m.Write([]byte(c.Selection + "\x00" + c.Deadline + "\x00" + c.Expires))
	return hex.EncodeToString(m.Sum(nil))
}

func (h *Handler) verify(c confirmation) (commands.Selection, time.Time, error) {
	var sel commands.Selection
	if !hmac.Equal([]byte(h.mac(&c)), []byte(c.MAC)) {
		return sel, time.Time{}, errForged
	}
	exp, _ := strconv.ParseInt(c.Expires, 10, 64)
	if time.Now().Unix() > exp {
		return sel, time.Time{}, fmt.Errorf("the dry run is older than %v: run it again, then confirm", confirmFor)
	}
	b, err := base64.RawURLEncoding.DecodeString(c.Selection)
	if err != nil || json.Unmarshal(b, &sel) != nil {
		return sel, time.Time{}, errors.New("the confirmation's selection could not be read")
	}
	var deadline time.Time
	if c.Deadline != "" {
		if deadline, err = time.Parse(time.RFC3339, c.Deadline); err != nil {
			return sel, time.Time{}, errors.New("the confirmation's deadline could not be read")
		}
	}
	return sel, deadline, nil
}
