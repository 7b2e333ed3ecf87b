package statuspage

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/xygroup/xygroup/worker"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// Inspector lists the commands parked under a meeting, a hold or a lane
// (*worker.Worker does).
type Inspector interface {
	ParkedCommands(ctx context.Context, m worker.ParkedMeeting, limit int) ([]worker.ParkedCommand, bool, error)
}

// Options configure the page.
type Options struct {
	JS jetstream.JetStream
	// Inspector lists parked commands; nil: the page shows counts only.
	Inspector Inspector
	// DefaultEnterprise is the workers' default tenant, for commands that
	// name none.
	DefaultEnterprise string
	// Token enables the replay action: a form that gives it may replay
	// failed commands. Empty: the page is read-only.
	Token string
	// Rate is each enterprise's budget by default, for the replay's estimate.
	Rate float64
	// Refresh is how often the page refreshes itself (5 s when 0).
	Refresh time.Duration
	// AllowedHosts are the names, besides localhost and IP addresses, that
	// requests may give as their Host (a reverse proxy's, a Service's). Any
	// other is refused (421), so that a name rebound to this address by an
	// attacker's DNS does not let a web page read or drive the page.
	AllowedHosts []string
	Log          zerolog.Logger
}

// MinTokenLength is the shortest replay token accepted.
const MinTokenLength = 16

// Handler serves the page.
type Handler struct {
	opts     Options
	tmpl     *template.Template
	static   http.Handler
	mux      *http.ServeMux
	cacheMu  sync.Mutex
	cached   *overviewData
	cachedAt time.Time
	commands *commandCache
	hosts    *worker.HostAllowList
	// guesses bounds attempts at the replay token and at confirmations.
	guesses *guessLimiter
}

// New returns the page's handler.
func New(o Options) (*Handler, error) {
	if o.JS == nil {
		return nil, errors.New("statuspage: no JetStream")
	}
	if o.Refresh <= 0 {
		o.Refresh = 5 * time.Second
	}
	if o.Rate <= 0 {
		o.Rate = 20
	}
	tmpl, err := template.New("").Funcs(funcs).ParseFS(templateFS, "templates/*.html")
	if err != nil {
		return nil, err
	}
	sub, _ := fs.Sub(staticFS, "static")
	h := &Handler{opts: o, tmpl: tmpl, static: http.StripPrefix("/static/", http.FileServerFS(sub)),
		commands: newCommandCache(), hosts: worker.NewHostAllowList(o.AllowedHosts), guesses: newGuessLimiter()}
	if o.Token != "" && len(o.Token) < MinTokenLength {
		return nil, fmt.Errorf("statuspage: the replay token must be at least %d characters (it guards replays; make one with: openssl rand -hex 16)", MinTokenLength)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", h.overview)
	mux.HandleFunc("GET /commands/{id}", h.command)
	mux.HandleFunc("GET /commands/{$}", h.command) // ?id=, for ids a path cannot carry
	mux.Handle("GET /static/", h.static)
	mux.HandleFunc("POST /replay", h.replay)
	h.mux = mux
	return h, nil
}

// ServeHTTP serves the page, to allowed Host values only, with headers that
// keep it to itself: no other origin's scripts, no framing, nothing cached.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !h.hosts.Allows(r.Host) {
		h.hosts.Refuse(w)
		return
	}
	hd := w.Header()
	hd.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
	hd.Set("X-Content-Type-Options", "nosniff")
	hd.Set("X-Frame-Options", "DENY")
	hd.Set("Referrer-Policy", "no-referrer")
	if !strings.HasPrefix(r.URL.Path, "/static/") {
		hd.Set("Cache-Control", "no-store")
	}
	h.mux.ServeHTTP(w, r)
}

// render writes a template, or a plain error if it fails half-way.
func (h *Handler) render(w http.ResponseWriter, status int, name string, data any) {
	var b strings.Builder
	if err := h.tmpl.ExecuteTemplate(&b, name, data); err != nil {
		h.opts.Log.Error().Err(err).Str("template", name).Msg("status page: render")
		http.Error(w, "the status page could not be rendered; the worker's log says why", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write([]byte(b.String()))
}
