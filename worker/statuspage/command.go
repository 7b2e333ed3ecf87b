package statuspage

import (
	"context"
	"errors"
	"net/http"
	"strconv"
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
	c, err := h.commands.get(ctx, strconv.Itoa(len(ent))+":"+ent+id, func(ctx context.Context) (*clusterstatus.Command, error) {
		return clusterstatus.LookupCommand(ctx, h.opts.JS, ent, id)
	})
	status := http.StatusOK
	switch {
	case errors.Is(err, errBusy):
		w.Header().Set("Retry-After", "1")
		http.Error(w, err.Error(), http.StatusTooManyRequests)
		return
	case err != nil:
		d.Err, status = err.Error(), http.StatusServiceUnavailable
		c = &clusterstatus.Command{EnterpriseID: ent, CommandID: id}
	case !c.Record.Known:
		status = http.StatusNotFound
	}
	d.Command = c
	name := "command"
	if r.URL.Query().Get("part") == "live" {
		name = "command-live"
	}
	h.render(w, status, name, d)
}
