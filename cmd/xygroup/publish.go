package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/schollz/progressbar/v3"
	"github.com/urfave/cli/v3"
	"golang.org/x/term"

	"github.com/xygroup/xygroup/worker/commands"
	"github.com/xygroup/xygroup/worker/contract"
	"github.com/xygroup/xygroup/worker/record"
)

func publishCommand() *cli.Command {
	return &cli.Command{
		Name:      "publish",
		Usage:     "publish commands: a JSON object, a JSON array or NDJSON, from files or stdin",
		ArgsUsage: "[FILE|-]...",
		Flags: append(natsFlags(),
			&cli.BoolFlag{Name: "wait", Usage: "wait for each command's terminal event, print it, exit 1 if any failed"},
			&cli.StringFlag{Name: "enterprise-id", Usage: "with --wait, the workers' default tenant, for commands that name no enterpriseId (default: as the running workers name it)", Sources: cli.EnvVars("XYLINK_ENTERPRISE_ID")},
			&cli.DurationFlag{Name: "timeout", Value: 10 * time.Minute, Usage: "with --wait, how long to wait"},
			&cli.BoolFlag{Name: "skip-invalid", Usage: "publish the valid commands of a file that has invalid ones"},
			&cli.BoolFlag{Name: "no-progress", Usage: "no progress bar (shown from 100 commands on)"},
		),
		Action: runPublish,
	}
}

func runPublish(ctx context.Context, cmd *cli.Command) error {
	sources := cmd.Args().Slice()
	if len(sources) == 0 {
		sources = []string{"-"}
	}
	var items []commands.Item
	invalid := 0
	for _, src := range sources {
		var r io.Reader = os.Stdin
		if src != "-" {
			f, err := os.Open(src)
			if err != nil {
				return cli.Exit(err.Error(), 1) // the input, not the command line, is wrong: exit 1 as a failure
			}
			defer f.Close()
			r = f
		}
		got, err := commands.Parse(r, src)
		if err != nil {
			return cli.Exit(err.Error(), 1)
		}
		for _, it := range got {
			if it.Err != nil {
				invalid++
				fmt.Fprintln(stderr(cmd), termSafe(fmt.Sprintf("%s: invalid command: %v", it.Where(), it.Err)))
				continue
			}
			items = append(items, it)
		}
	}
	if invalid > 0 && !cmd.Bool("skip-invalid") {
		return cli.Exit(fmt.Sprintf("%d invalid command(s); nothing published (use --skip-invalid to publish the others)", invalid), 1)
	}
	if len(items) == 0 {
		return cli.Exit("no commands to publish", 1)
	}
	nc, err := connectNATS(cmd, "xygroup-publish")
	if err != nil {
		return cli.Exit(err.Error(), 1)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	if !cmd.Bool("wait") {
		bar := newBar(cmd, len(items) >= 100 && !cmd.Bool("no-progress"), len(items), "publish")
		for _, it := range items {
			if _, err := publishOne(ctx, js, it); err != nil {
				return cli.Exit(err.Error(), 1)
			}
			_ = bar.Add(1)
		}
		_ = bar.Finish()
		fmt.Fprintf(stderr(cmd), "published %d command(s)\n", len(items))
		return nil
	}
	return publishAndWait(ctx, cmd, nc, js, items)
}

// publishOne publishes a command, within 30 s.
func publishOne(ctx context.Context, js jetstream.JetStream, it commands.Item) (published, error) {
	pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	ref, dup, err := commands.PublishAck(pctx, js, it.Raw, nil)
	if err != nil {
		return published{}, fmt.Errorf("%s: %v", it.Where(), err)
	}
	var nb struct {
		NotBefore time.Time `json:"notBefore"`
	}
	_ = json.Unmarshal(it.Raw, &nb) // the schema checked it: a time, or none
	return published{ref: ref, duplicate: dup, notBefore: nb.NotBefore}, nil
}

// published is a command publish --wait awaits.
type published struct {
	ref       commands.Ref
	duplicate bool // the commands stream held it already
	notBefore time.Time
}

// publishAndWait publishes the commands and prints each one's terminal event;
// while it waits, it says what for.
func publishAndWait(ctx context.Context, cmd *cli.Command, nc *nats.Conn, js jetstream.JetStream, items []commands.Item) error {
	// The records of commands that name no enterpriseId are kept under the
	// workers' default tenant: given, or read from the workers' heartbeats.
	tenant, tenantErr := cmd.String("enterprise-id"), error(nil)
	if tenant == "" && slices.ContainsFunc(items, func(it commands.Item) bool { return contract.IdentityOf(it.Raw).EnterpriseID == "" }) {
		tctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		tenant, tenantErr = commands.WorkersDefaultEnterprise(tctx, js)
		cancel()
	}
	// Subscribed before publishing: no event of these commands can be missed.
	waiter, err := commands.NewWaiter(ctx, js, commands.RecordLookup(js, tenant))
	if err != nil {
		return cli.Exit(err.Error(), 1)
	}
	defer waiter.Close()
	waitingMsgs := make(chan *nats.Msg, 1024)
	if sub, err := nc.ChanSubscribe(contract.SubjectWaiting, waitingMsgs); err == nil {
		defer func() { _ = sub.Unsubscribe() }()
	} // without it (a user not allowed to follow waiting events), only what they say is missed

	showBar := len(items) >= 100 && !cmd.Bool("no-progress")
	bar := newBar(cmd, showBar, len(items), "publish")
	cmds := make([]published, 0, len(items))
	for _, it := range items {
		p, err := publishOne(ctx, js, it)
		if err != nil {
			return cli.Exit(err.Error(), 1)
		}
		cmds = append(cmds, p)
		_ = bar.Add(1)
	}
	_ = bar.Finish()
	fmt.Fprintf(stderr(cmd), "published %d command(s)\n", len(cmds))

	w := &waitState{out: stderr(cmd), pending: map[commands.Ref]string{}, notBefore: map[commands.Ref]time.Time{}}
	refs := make([]commands.Ref, len(cmds))
	for i, p := range cmds {
		refs[i] = p.ref
		w.pending[p.ref] = "no outcome yet"
		w.notBefore[p.ref] = p.notBefore
	}
	w.describeDuplicates(ctx, js, cmds, tenant, tenantErr)

	wctx, wcancel := context.WithTimeout(ctx, cmd.Duration("timeout"))
	defer wcancel()
	go w.follow(wctx, waitingMsgs)
	if w.recorded < len(cmds) {
		go func() {
			// After a heartbeat's interval: a worker that has just started
			// (ready, consuming) may not have written its first one yet.
			select {
			case <-wctx.Done():
			case <-time.After(heartbeatGrace):
				if noWorkerRunning(wctx, js) && wctx.Err() == nil {
					w.say("%s", noWorkerNote)
				}
			}
		}()
	}
	failed := 0
	bar = newBar(cmd, showBar, len(refs), "wait")
	err = waiter.Await(wctx, refs, func(e commands.Event) {
		w.done(e.Ref)
		fmt.Fprintln(stdout(cmd), jsonSafe(e.Data))
		if e.Failed {
			failed++
		}
		_ = bar.Add(1)
	})
	_ = bar.Finish()
	if err != nil {
		switch {
		case ctx.Err() != nil: // Ctrl-C: the commands go on without us
			return cli.Exit(w.unfinished(ctx, js, "interrupted", len(refs), tenant, tenantErr), 1)
		case errors.Is(err, context.DeadlineExceeded):
			return cli.Exit(w.unfinished(ctx, js, fmt.Sprintf("gave up waiting after %v (--timeout)", cmd.Duration("timeout")), len(refs), tenant, tenantErr), 1)
		}
		return cli.Exit(err.Error(), 1)
	}
	if failed > 0 {
		return cli.Exit(fmt.Sprintf("%d of %d command(s) failed", failed, len(refs)), 1)
	}
	return nil
}

// waitState is what publish --wait knows of the commands still pending: what
// each one waits for.
type waitState struct {
	out       io.Writer
	mu        sync.Mutex
	pending   map[commands.Ref]string
	notBefore map[commands.Ref]time.Time
	recorded  int // duplicates whose terminal event the records hold
}

// shownAtOnce: lines about single commands printed before they are summed up.
const shownAtOnce = 10

func (w *waitState) say(format string, a ...any) {
	fmt.Fprintln(w.out, termSafe(fmt.Sprintf(format, a...)))
}

func (w *waitState) done(r commands.Ref) {
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.pending, r)
}

// describeDuplicates says, for the commands the stream held already, where
// their outcome is looked up, and what they wait for when they have none yet.
func (w *waitState) describeDuplicates(ctx context.Context, js jetstream.JetStream, cmds []published, tenant string, tenantErr error) {
	if n := len(slices.DeleteFunc(slices.Clone(cmds), func(p published) bool { return !p.duplicate })); n > 0 {
		w.say("%d of them the commands stream held already (published before): their outcome is read from the workers' records", n)
	}
	shown := 0
	for _, p := range cmds {
		if !p.duplicate {
			continue
		}
		ent := p.ref.EnterpriseID
		if ent == "" {
			ent = tenant
		}
		var what string
		if ent == "" {
			what = fmt.Sprintf("published before; it names no enterpriseId, so its outcome is recorded under the workers' default tenant, "+
				"which could not be read (%v): give it with --enterprise-id or XYLINK_ENTERPRISE_ID (the workers' XYLINK_ENTERPRISE_ID; "+
				"sandbox-enterprise for worker --sandbox); until then only a new event of it can end the wait", tenantErr)
		} else {
			lctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			st, err := record.Lookup(lctx, js, ent, p.ref.CommandID)
			cancel()
			switch {
			case err != nil:
				what = fmt.Sprintf("published before; its record could not be read (%v): waiting for its terminal event", err)
			case st.Terminal != "":
				w.recorded++
				continue // printed at once by the wait
			case st.Known && p.notBefore.After(time.Now()):
				what = fmt.Sprintf("published before and not ended yet: its notBefore is %s (%d call(s) so far)", p.notBefore.UTC().Format(time.RFC3339), st.Attempts)
			case st.Known:
				what = fmt.Sprintf("published before and not ended yet (%d call(s) so far; a parked one waits for its meeting or notBefore: "+
					"xygroup events --command %s --type waiting): waiting for its terminal event", st.Attempts, p.ref.CommandID)
			default:
				what = "published before, and no worker of tenant " + ent + " has a record of it yet: waiting for its terminal event"
			}
		}
		w.mu.Lock()
		w.pending[p.ref] = what
		w.mu.Unlock()
		if shown < shownAtOnce {
			shown++
			w.say("%s: %s", p.ref.CommandID, what)
		}
	}
}

// follow prints the waiting events of the pending commands: parked until
// their meeting starts or their notBefore.
func (w *waitState) follow(ctx context.Context, msgs <-chan *nats.Msg) {
	for {
		select {
		case <-ctx.Done():
			return
		case m := <-msgs:
			var ev struct {
				Deadline      time.Time `json:"deadline"`
				NextAttemptAt time.Time `json:"nextAttemptAt"`
			}
			id := contract.IdentityOf(m.Data)
			if json.Unmarshal(m.Data, &ev) != nil {
				continue
			}
			w.mu.Lock()
			ref := commands.Ref{EnterpriseID: id.EnterpriseID, CommandID: id.CommandID}
			if _, ok := w.pending[ref]; !ok {
				ref.EnterpriseID = ""
			}
			_, ok := w.pending[ref]
			var what string
			if ok {
				if nb := w.notBefore[ref]; !nb.IsZero() && ev.NextAttemptAt.Equal(nb.UTC()) {
					what = fmt.Sprintf("parked until its notBefore %s (its deadline: %s)", nb.UTC().Format(time.RFC3339), ev.Deadline.Format(time.RFC3339))
				} else {
					what = fmt.Sprintf("parked: meeting %s has not started; next try %s, until its deadline %s",
						id.MeetingRoomNumber, ev.NextAttemptAt.Format(time.RFC3339), ev.Deadline.Format(time.RFC3339))
				}
				w.pending[ref] = what
			}
			w.mu.Unlock()
			if ok {
				w.say("%s: %s", id.CommandID, what)
			}
		}
	}
}

// unfinished says which commands the wait ended without (how it ended: why),
// and what they wait for.
func (w *waitState) unfinished(ctx context.Context, js jetstream.JetStream, why string, total int, tenant string, tenantErr error) string {
	noWorker := noWorkerRunning(context.WithoutCancel(ctx), js)
	w.mu.Lock()
	defer w.mu.Unlock()
	refs := make([]commands.Ref, 0, len(w.pending))
	for r := range w.pending {
		refs = append(refs, r)
	}
	slices.SortFunc(refs, func(a, b commands.Ref) int { return strings.Compare(a.CommandID, b.CommandID) })
	lines := make([]string, 0, shownAtOnce+1)
	for i, r := range refs {
		if i == shownAtOnce {
			lines = append(lines, fmt.Sprintf("  and %d more", len(refs)-shownAtOnce))
			break
		}
		lines = append(lines, fmt.Sprintf("  %s: %s", r.CommandID, w.pending[r]))
	}
	msg := fmt.Sprintf("%s: %d of %d command(s) have no terminal event yet; publish them again with --wait to go on waiting:\n%s",
		why, len(refs), total, strings.Join(lines, "\n"))
	if noWorker {
		msg += "\n" + noWorkerNote
	}
	if tenant == "" && tenantErr != nil && slices.ContainsFunc(refs, func(r commands.Ref) bool { return r.EnterpriseID == "" }) {
		msg += fmt.Sprintf("\nthe outcome of a command that names no enterpriseId is recorded under the workers' default tenant, which could not be read (%v): "+
			"give it with --enterprise-id or XYLINK_ENTERPRISE_ID", tenantErr)
	}
	return msg
}

// heartbeatGrace is how long publish --wait waits before it says that no
// worker is running: a little more than a worker's heartbeat interval (5 s).
const heartbeatGrace = 6 * time.Second

// noWorkerNote is said when no worker runs: nothing ends the wait until one starts.
const noWorkerNote = "no worker is running (none has a heartbeat in " + contract.BucketReplicas +
	"): the commands wait in the commands stream until one starts (xygroup worker)"

// noWorkerRunning says whether the heartbeats bucket shows no worker, within
// 5 s; a user that may not read it (the shipped publisher) learns nothing.
func noWorkerRunning(ctx context.Context, js jetstream.JetStream) bool {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	kv, err := js.KeyValue(ctx, contract.BucketReplicas)
	if err != nil {
		return false // a worker creates it as it starts: one may be starting
	}
	keys, err := kv.ListKeys(ctx)
	if err != nil {
		return false
	}
	for range keys.Keys() {
		return false
	}
	return ctx.Err() == nil // the list ended, not the time
}

// newBar is a progress bar on stderr, or one that draws nothing: also when
// stderr is not a terminal (a log, a pipe), where its redraws would be kept as
// text.
func newBar(cmd *cli.Command, show bool, total int, what string) *progressbar.ProgressBar {
	if f, ok := stderr(cmd).(*os.File); !ok || !term.IsTerminal(int(f.Fd())) {
		show = false
	}
	if !show {
		return progressbar.DefaultSilent(int64(total))
	}
	return progressbar.NewOptions(total, progressbar.OptionSetWriter(stderr(cmd)), progressbar.OptionSetDescription(what),
		progressbar.OptionShowCount(), progressbar.OptionShowIts(), progressbar.OptionSetItsString("cmd"),
		progressbar.OptionSetPredictTime(true), progressbar.OptionThrottle(200*time.Millisecond), progressbar.OptionClearOnFinish())
}
