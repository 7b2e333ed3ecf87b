package statuspage

import (
	"context"
	"net/http"
	"time"

	"github.com/xygroup/xygroup/worker/clusterstatus"
)

type commandData struct {
	page
	Command *clusterstatus.Command
}

func (h *Handler) command(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	defer cancel()
	id := r.PathValue("id")
	if id == "" {
		id = r.URL.Query().Get("id")
	}
	if id == "" {
		http.Error(w, "name a command: /commands/{commandId}?enterprise={enterpriseId}", http.StatusNotFound)
		return
	}
	ent := r.URL.Query().Get("enterprise")
	if ent == "" {
		ent = h.opts.DefaultEnterprise
	}
	live := commandURL(ent, id) + "&part=live"
	d := &commandData{page: h.basePage("command "+id, live)}
	c, err := clusterstatus.LookupCommand(ctx, h.opts.JS, ent, id, eventsSearched)
	status := http.StatusOK
	switch {
	case err != nil:
		d.Err, status = err.Error(), http.StatusServiceUnavailable
	case !c.Record.Known && len(c.Events) == 0:
		status = http.StatusNotFound
	}
	d.Command = c
	name := "command"
	if r.URL.Query().Get("part") == "live" {
		name = "command-live"
	}
	h.render(w, status, name, d)
}
