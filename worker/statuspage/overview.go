package statuspage

import (
	"context"
	"net/http"
	"slices"
	"sort"
	"time"

	"github.com/xygroup/xygroup/worker"
	"github.com/xygroup/xygroup/worker/clusterstatus"
	"github.com/xygroup/xygroup/worker/commands"
	"github.com/xygroup/xygroup/worker/ratelimit"
)

// Bounds on what one rendering reads: the page stays quick with a million
// parked commands or events.
const (
	meetingsShown      = 20
	holdsShown         = 20
	lanesShown         = 20
	commandsPerMeeting = 10
	failuresShown      = 25
	eventsSearched     = 2000
)

type page struct {
	Title   string
	At      time.Time
	Refresh time.Duration
	// Live is the URL the page's live part is polled from.
	Live string
	Err  string
}

type overviewData struct {
	page
	Status  *clusterstatus.Status
	Tenants []tenantView
	// TenantsMore: tenants not shown.
	TenantsMore int
	Holds       []holdView
	Lanes       []meetingView
	Meetings    []meetingView
	// MeetingsMore, HoldsMore and LanesMore: not shown.
	MeetingsMore, HoldsMore, LanesMore int
	Failures                           *clusterstatus.Failures
	Classes                            []classCount
	Replay                             *replayForm
}

type tenantView struct {
	ID           string
	Rate         float64
	Used         float64 // per second, over the last ten seconds
	UsePercent   float64
	Waiting      int
	GuardMs      float64
	Throttled10m int
	// MaxWindow: the most requests the dispenser let leave in a sliding
	// second of the last minute; Over: more than the rate. ThrottledTotal:
	// the 429s reported to the dispenser.
	MaxWindow      int
	Over           bool
	ThrottledTotal int
	Chart          chart
}

type holdView struct {
	EnterpriseID string
	State        string
	Reason       string
	LastFailure  string
	Failures     int
	Opens        int
	OpenedAt     time.Time
	NextProbeAt  time.Time
	Parked       uint64
	Commands     []worker.ParkedCommand
	More         bool
	meeting      worker.ParkedMeeting // its hold's record
}

type meetingView struct {
	worker.ParkedMeeting
	Commands []worker.ParkedCommand
	More     bool
}

type classCount struct {
	Class string
	Count uint64
}

func (h *Handler) overview(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	defer cancel()
	d := h.snapshot(ctx)
	status := http.StatusOK
	if d.Err != "" {
		status = http.StatusServiceUnavailable
	}
	name := "overview"
	if r.URL.Query().Get("part") == "live" {
		name = "overview-live"
	}
	h.render(w, status, name, d)
}

// snapshot is the overview's data, read at most once per cacheFor whatever
// the number of viewers: one reader at a time, the others take its result.
func (h *Handler) snapshot(ctx context.Context) *overviewData {
	h.cacheMu.Lock()
	defer h.cacheMu.Unlock()
	if h.cached != nil && time.Since(h.cachedAt) < min(cacheFor, h.opts.Refresh) {
		return h.cached
	}
	d := h.collect(ctx)
	if d.Err == "" {
		h.cached, h.cachedAt = d, time.Now()
	}
	return d
}

// cacheFor: how long one reading of the cluster serves every viewer.
const cacheFor = 2 * time.Second

func (h *Handler) basePage(title, live string) page {
	return page{Title: title, At: time.Now().UTC(), Refresh: h.opts.Refresh, Live: live}
}

func (h *Handler) collect(ctx context.Context) *overviewData {
	d := &overviewData{page: h.basePage("xygroup status", "/?part=live")}
	st, err := clusterstatus.Collect(ctx, h.opts.JS)
	if err != nil {
		d.Err = err.Error()
		return d
	}
	d.Status, d.At = st, st.At
	d.Tenants, d.TenantsMore = busiestTenants(tenants(st.Limiter))

	holds := map[string]*holdView{}
	hold := func(ent string) *holdView {
		if hv := holds[ent]; hv != nil {
			return hv
		}
		hv := &holdView{EnterpriseID: ent, State: "closed"}
		holds[ent] = hv
		return hv
	}
	for _, b := range st.Breakers {
		if b.State != "open" && b.Failures == 0 {
			continue
		}
		hv := hold(b.EnterpriseID)
		hv.State, hv.Reason, hv.LastFailure, hv.Failures, hv.Opens, hv.OpenedAt = b.State, b.Reason, b.LastFailure, b.Failures, b.Opens, b.OpenedAt
		if b.State == "open" {
			hv.NextProbeAt = b.OpenUntil
		}
	}
	for _, m := range st.Meetings {
		switch m.Kind {
		case "breaker":
			hv := hold(m.EnterpriseID)
			hv.Parked = m.Parked
			if hv.NextProbeAt.IsZero() {
				hv.NextProbeAt = m.NextProbeAt
			}
			hv.meeting = m
		case "lane":
			if len(d.Lanes) == lanesShown {
				d.LanesMore++
				continue
			}
			d.Lanes = append(d.Lanes, meetingView{ParkedMeeting: m})
		default:
			if len(d.Meetings) == meetingsShown {
				d.MeetingsMore++
				continue
			}
			mv := meetingView{ParkedMeeting: m}
			mv.Commands, mv.More = h.parked(ctx, m)
			d.Meetings = append(d.Meetings, mv)
		}
	}
	for _, hv := range holds {
		d.Holds = append(d.Holds, *hv)
	}
	// Open ones first, then the most held commands.
	sort.Slice(d.Holds, func(i, j int) bool {
		a, b := d.Holds[i], d.Holds[j]
		if (a.State == "open") != (b.State == "open") {
			return a.State == "open"
		}
		if a.Parked != b.Parked {
			return a.Parked > b.Parked
		}
		return a.EnterpriseID < b.EnterpriseID
	})
	if len(d.Holds) > holdsShown {
		d.HoldsMore, d.Holds = len(d.Holds)-holdsShown, d.Holds[:holdsShown]
	}
	for i := range d.Holds {
		if d.Holds[i].Parked > 0 {
			d.Holds[i].Commands, d.Holds[i].More = h.parked(ctx, d.Holds[i].meeting)
		}
	}

	if d.Failures, err = clusterstatus.RecentFailures(ctx, h.opts.JS, failuresShown, eventsSearched); err != nil {
		d.Err = err.Error()
		return d
	}
	for c, n := range d.Failures.ByClass {
		d.Classes = append(d.Classes, classCount{c, n})
	}
	sort.Slice(d.Classes, func(i, j int) bool { return d.Classes[i].Count > d.Classes[j].Count })
	if h.opts.Token != "" {
		d.Replay = &replayForm{Classes: replayClasses(d.Failures.ByClass), Since: "24h", Chosen: map[string]bool{}}
		for _, c := range commands.WorthReplaying {
			d.Replay.Chosen[c] = true
		}
	}
	return d
}

// replayClasses are the classes a replay may choose: those worth replaying
// (chosen by default), then the others that stored failures have.
func replayClasses(byClass map[string]uint64) []string {
	out := append([]string(nil), commands.WorthReplaying...)
	var others []string
	for c := range byClass {
		if !slices.Contains(out, c) {
			others = append(others, c)
		}
	}
	sort.Strings(others)
	return append(out, others...)
}

// parked lists the first commands of a meeting, a hold or a lane.
func (h *Handler) parked(ctx context.Context, m worker.ParkedMeeting) ([]worker.ParkedCommand, bool) {
	if h.opts.Inspector == nil {
		return nil, m.Parked > 0
	}
	cmds, more, err := h.opts.Inspector.ParkedCommands(ctx, m, commandsPerMeeting)
	if err != nil {
		h.opts.Log.Warn().Err(err).Str("meetingRoomNumber", m.Meeting).Msg("status page: parked commands")
	}
	return cmds, more
}

func tenants(l *ratelimit.LeaseInfo) []tenantView {
	if l == nil {
		return nil
	}
	out := make([]tenantView, 0, len(l.Enterprises))
	for id, e := range l.Enterprises {
		used := float64(e.Granted10s) / 10
		out = append(out, tenantView{ID: id, Rate: e.Rate, Used: used, UsePercent: 100 * used / max(e.Rate, 0.001),
			Waiting: e.Waiting, GuardMs: e.GuardMs, Throttled10m: e.Throttled10m, Chart: budgetChart(e, l.WindowsEnd),
			MaxWindow: e.MaxWindow1m, Over: float64(e.MaxWindow1m) > e.Rate, ThrottledTotal: e.ThrottledTotal})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// tenantsShown bounds the tenants the page draws: the busiest, by their use
// now, then by name.
const tenantsShown = 50

func busiestTenants(all []tenantView) ([]tenantView, int) {
	if len(all) <= tenantsShown {
		return all, 0
	}
	byUse := append([]tenantView(nil), all...)
	sort.SliceStable(byUse, func(i, j int) bool {
		return byUse[i].Used+float64(byUse[i].Waiting) > byUse[j].Used+float64(byUse[j].Waiting)
	})
	shown := byUse[:tenantsShown]
	sort.Slice(shown, func(i, j int) bool { return shown[i].ID < shown[j].ID })
	return shown, len(all) - tenantsShown
}
