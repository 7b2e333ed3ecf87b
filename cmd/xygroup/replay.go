package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/urfave/cli/v3"

	"github.com/xygroup/xygroup/worker/commands"
)

func replayCommand() *cli.Command {
	return &cli.Command{
		Name:  "replay",
		Usage: "re-publish failed or queued commands, paced behind live ones; resumable",
		Description: "Selects commands from failed events (default: classes unavailable and meeting_not_started), from the\n" +
			"commands stream (--from-commands) or from an NDJSON file (--file), and publishes them again marked as a\n" +
			"replay: live commands come first, created commands are never sent again, and running the same replay\n" +
			"again (after Ctrl-C) resumes it.",
		Flags: append(natsFlags(),
			&cli.BoolFlag{Name: "from-commands", Usage: "select from the commands stream instead of failed events"},
			&cli.StringFlag{Name: "file", Usage: "select from an NDJSON file of commands", TakesFile: true},
			&cli.StringSliceFlag{Name: "class", Usage: "failure classes to replay (default unavailable,meeting_not_started)"},
			&cli.StringFlag{Name: "meeting", Usage: "only this meetingRoomNumber"},
			&cli.StringFlag{Name: "enterprise", Usage: "only this enterpriseId"},
			&cli.StringFlag{Name: "enterprise-id", Usage: "the workers' default tenant, for commands that name no enterpriseId", Sources: cli.EnvVars("XYLINK_ENTERPRISE_ID")},
			&cli.StringFlag{Name: "since", Usage: "from this time (RFC 3339) or this long ago (24h)"},
			&cli.StringFlag{Name: "until", Usage: "up to this time (RFC 3339) or this long ago"},
			&cli.Uint64Flag{Name: "seq-from", Usage: "with --from-commands: first stream sequence"},
			&cli.Uint64Flag{Name: "seq-to", Usage: "with --from-commands: last stream sequence"},
			&cli.BoolFlag{Name: "dry-run", Usage: "show what would be replayed and how long it would take"},
			&cli.BoolFlag{Name: "new-ids", Usage: "give the commands new commandIds, so that even created ones are sent again"},
			&cli.StringFlag{Name: "id", Usage: "name of the replay (default: derived from the selection; the same name resumes)"},
			&cli.FloatFlag{Name: "rate", Value: 20, Usage: "API requests per second, for the estimate", Sources: cli.EnvVars("XYGROUP_RATE")},
			&cli.DurationFlag{Name: "wait", Value: time.Hour, Usage: "how long to wait for the outcomes after publishing (0: do not wait)"},
			&cli.BoolFlag{Name: "no-progress", Usage: "no progress bar"},
		),
		Action: runReplay,
	}
}

func runReplay(ctx context.Context, cmd *cli.Command) error {
	sel, err := selection(cmd)
	if err != nil {
		return cli.Exit(err.Error(), 2)
	}
	id := cmd.String("id")
	if id == "" {
		id = sel.ID()
	}
	nc, err := connectNATS(cmd, "xygroup-replay")
	if err != nil {
		return cli.Exit(err.Error(), 1)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	cp, err := commands.LoadCheckpoint(ctx, js, id)
	if err != nil {
		return cli.Exit(err.Error(), 1)
	}
	resumed := cp != nil
	if resumed {
		sel = cp.Selection // the same commands as the first run, whatever "24h ago" means now
	} else {
		cp = &commands.Checkpoint{ID: id, Selection: sel, NewIDs: cmd.Bool("new-ids")}
	}
	items, err := commands.Select(ctx, js, sel)
	if err != nil {
		return cli.Exit(err.Error(), 1)
	}
	if cmd.Bool("dry-run") {
		printDryRun(stdout(cmd), items, cmd.Float("rate"), id, cp, resumed)
		return nil
	}
	if len(items) == 0 {
		fmt.Fprintln(stderr(cmd), "nothing to replay")
		return nil
	}
	if resumed {
		fmt.Fprintf(stderr(cmd), "resuming replay %s: %d of %d handled before\n", id, cp.Done, len(items))
	} else {
		fmt.Fprintf(stderr(cmd), "replay %s: %d command(s)\n", id, len(items))
	}
	bar := newBar(cmd, !cmd.Bool("no-progress"), len(items), "replay")
	r := &commands.Replayer{JS: js, NewIDs: cp.NewIDs, DefaultEnterprise: cmd.String("enterprise-id"), Progress: func(_, done, _ int) {
		_ = bar.Set(done) // commands ended (or skipped): the ETA follows the API's pace
	}}
	waitCtx, cancel := context.WithTimeout(ctx, cmd.Duration("wait"))
	defer cancel()
	sum, err := r.Run(ctx, waitCtx, cp, items)
	_ = bar.Finish()
	if errors.Is(err, context.Canceled) || (err == nil && ctx.Err() != nil) {
		fmt.Fprintf(stderr(cmd), "interrupted; run the same command again to resume replay %s\n", id)
		printSummary(cmd, sum)
		return cli.Exit("", 130)
	}
	if err != nil {
		return cli.Exit(err.Error(), 1)
	}
	printSummary(cmd, sum)
	if failedAgain(sum) > 0 || sum.Pending > 0 {
		return cli.Exit("", 1)
	}
	return nil
}

func selection(cmd *cli.Command) (commands.Selection, error) {
	now := time.Now()
	s := commands.Selection{Source: "failed", Meeting: cmd.String("meeting"), Enterprise: cmd.String("enterprise"),
		SeqFrom: cmd.Uint64("seq-from"), SeqTo: cmd.Uint64("seq-to")}
	switch {
	case cmd.Bool("from-commands") && cmd.String("file") != "":
		return s, errors.New("choose --from-commands or --file, not both")
	case cmd.Bool("from-commands"):
		s.Source = "commands"
	case cmd.String("file") != "":
		s.Source, s.File = "file", cmd.String("file")
		raw, err := os.ReadFile(s.File)
		if err != nil {
			return s, err
		}
		h := sha256.Sum256(raw)
		s.FileHash = hex.EncodeToString(h[:8])
	}
	if (s.SeqFrom != 0 || s.SeqTo != 0) && s.Source != "commands" {
		return s, errors.New("--seq-from and --seq-to go with --from-commands")
	}
	for _, c := range cmd.StringSlice("class") {
		for _, one := range strings.Split(c, ",") {
			if one = strings.TrimSpace(one); one != "" {
				s.Classes = append(s.Classes, one)
			}
		}
	}
	if len(s.Classes) > 0 && s.Source != "failed" {
		return s, errors.New("--class selects failed events; it does not go with --from-commands or --file")
	}
	var err error
	if s.Since, err = parseWhen(cmd.String("since"), now); err != nil {
		return s, fmt.Errorf("--since: %w", err)
	}
	if s.Until, err = parseWhen(cmd.String("until"), now); err != nil {
		return s, fmt.Errorf("--until: %w", err)
	}
	return s, nil
}

func printDryRun(out io.Writer, items []commands.ReplayItem, rate float64, id string, cp *commands.Checkpoint, resumed bool) {
	meetings := map[string]bool{}
	for _, it := range items {
		meetings[it.Meeting] = true
	}
	left := len(items)
	if resumed {
		left -= cp.Done
	}
	fmt.Fprintf(out, "replay %s would publish %d command(s) for %d meeting(s)", id, left, len(meetings))
	if resumed {
		fmt.Fprintf(out, " (resuming: %d of %d handled before)", cp.Done, len(items))
	}
	fmt.Fprintln(out)
	classes := commands.Classes(items)
	names := make([]string, 0, len(classes))
	for c := range classes {
		names = append(names, c)
	}
	sort.Strings(names)
	for _, c := range names {
		fmt.Fprintf(out, "  %-24s %d\n", c, classes[c])
	}
	eta := time.Duration(float64(left) / max(rate, 0.001) * float64(time.Second))
	fmt.Fprintf(out, "at %g requests/s (less what live commands use): at least %v; created commands are skipped\n", rate, eta.Round(time.Second))
}

func printSummary(cmd *cli.Command, s commands.Summary) {
	b, _ := json.Marshal(s)
	fmt.Fprintln(stdout(cmd), string(b))
	fmt.Fprintf(stderr(cmd), "selected %d: published %d, skipped as created %d, handled before %d; outcomes: created %d, failed again %d %v, pending %d\n",
		s.Selected, s.Published, s.SkippedDone, s.AlreadyReplayed, s.Created, failedAgain(s), s.FailedAgain, s.Pending)
}

func failedAgain(s commands.Summary) int {
	n := 0
	for _, c := range s.FailedAgain {
		n += c
	}
	return n
}
