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
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/urfave/cli/v3"

	"github.com/xygroup/xygroup/worker/commands"
	"github.com/xygroup/xygroup/xylink"
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
			&cli.StringFlag{Name: "deadline", Usage: "the replayed commands' new deadline: a time (RFC 3339) or a duration from now (30m); default: the workers' maximum wait from each one's arrival"},
			&cli.BoolFlag{Name: "wait", Value: true, Usage: "wait for the outcomes after publishing, print them summed up, exit 1 if any failed again or is still pending (--wait=false: publish and exit)"},
			&cli.DurationFlag{Name: "timeout", Value: time.Hour, Usage: "with --wait, how long to wait for the outcomes"},
			&cli.BoolFlag{Name: "no-progress", Usage: "no progress bar"},
		),
		Action: runReplay,
	}
}

func runReplay(ctx context.Context, cmd *cli.Command) error {
	wait, err := replayWait(cmd)
	if err != nil {
		return err
	}
	given, err := selection(cmd)
	if err != nil {
		return usageErrorf(cmd, "%v", err)
	}
	deadline, err := replayDeadline(cmd.String("deadline"), time.Now())
	if err != nil {
		return usageErrorf(cmd, "%v", err)
	}
	nc, err := connectNATS(cmd, "xygroup-replay")
	if err != nil {
		return cli.Exit(err.Error(), 1)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	sel, resolvedAt, err := given.Resolve(ctx, js, cmd.String("id"), time.Now())
	if err != nil {
		return cli.Exit(fmt.Sprintf("replay: resolve --since/--until: %v", err), 1)
	}
	id := cmd.String("id")
	if id == "" {
		id = sel.ID()
	}
	cp, err := commands.LoadCheckpoint(ctx, js, id)
	if err != nil {
		return cli.Exit(fmt.Sprintf("replay %s: load its progress: %v", id, err), 1)
	}
	resumed := cp != nil
	if resumed {
		sel = cp.Selection // the same commands as the first run, whatever "24h ago" means now
		if !deadline.IsZero() {
			cp.Deadline = deadline
		}
	} else {
		cp = &commands.Checkpoint{ID: id, Selection: sel, NewIDs: cmd.Bool("new-ids"), Deadline: deadline}
	}
	resume := resumeCommand(sel, cp.NewIDs, cmd.String("id"))
	fmt.Fprintf(stderr(cmd), "replay %s: resume with: %s\n", id, resume)
	if given.IsRelative() && time.Since(resolvedAt) > time.Second {
		fmt.Fprintf(stderr(cmd), "replay %s: --since/--until as the same command resolved them %v ago\n", id, time.Since(resolvedAt).Round(time.Second))
	}
	items, err := commands.Select(ctx, js, sel)
	if err != nil {
		return cli.Exit(fmt.Sprintf("replay %s: select: %v", id, err), 1)
	}
	var others string
	if len(items) == 0 {
		others = notSelected(ctx, js, sel)
	}
	if cmd.Bool("dry-run") {
		printDryRun(stdout(cmd), items, cmd.Float("rate"), id, cp, resumed)
		if others != "" {
			fmt.Fprintln(stdout(cmd), others)
		}
		return nil
	}
	if len(items) == 0 {
		fmt.Fprintln(stderr(cmd), "nothing to replay")
		if others != "" {
			fmt.Fprintln(stderr(cmd), others)
		}
		return nil
	}
	if resumed {
		fmt.Fprintf(stderr(cmd), "resuming replay %s: %d of %d handled before%s\n", id, cp.Done, len(items), finishedNote(cp.Done, len(items)))
	} else {
		fmt.Fprintf(stderr(cmd), "replay %s: %d command(s)\n", id, len(items))
	}
	bar := newBar(cmd, !cmd.Bool("no-progress"), len(items), "replay")
	r := &commands.Replayer{JS: js, NewIDs: cp.NewIDs, Deadline: cp.Deadline, DefaultEnterprise: cmd.String("enterprise-id"), Progress: func(_, done, _ int) {
		_ = bar.Set(done) // commands ended (or skipped): the ETA follows the API's pace
	}}
	waitCtx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	sum, err := r.Run(ctx, waitCtx, cp, items)
	_ = bar.Finish()
	if errors.Is(err, context.Canceled) || (err == nil && ctx.Err() != nil) {
		printSummary(cmd, sum)
		return cli.Exit(fmt.Sprintf("replay %s: interrupted; resume with: %s", id, resume), 130)
	}
	if err != nil {
		return cli.Exit(fmt.Sprintf("replay %s: %v", id, err), 1)
	}
	printSummary(cmd, sum)
	if msg := unfinished(sum, wait); msg != "" {
		return cli.Exit(fmt.Sprintf("replay %s: %s", id, msg), 1)
	}
	return nil
}

// notSelected says which failures a selection of failed events that selects
// nothing leaves out by their class: counts per class, and the flag that
// selects them ("" when there are none, or they cannot be read).
func notSelected(ctx context.Context, js jetstream.JetStream, sel commands.Selection) string {
	if sel.Source != "failed" {
		return ""
	}
	all := sel
	all.Classes = make([]string, len(xylink.Classes))
	for i, c := range xylink.Classes {
		all.Classes[i] = string(c)
	}
	items, err := commands.Select(ctx, js, all)
	if err != nil {
		return ""
	}
	counts := commands.Classes(items)
	selected := sel.Classes
	if len(selected) == 0 {
		selected = commands.WorthReplaying
	}
	for _, c := range selected {
		delete(counts, c)
	}
	if len(counts) == 0 {
		return ""
	}
	names := make([]string, 0, len(counts))
	for c := range counts {
		names = append(names, c)
	}
	sort.Strings(names)
	return termSafe(fmt.Sprintf("not selected: failures of other classes: %s (select them with --class %s)", classCounts(counts), strings.Join(names, ",")))
}

// replayWait is how long a replay waits for the outcomes (0: not at all).
// "--wait 30m", from when --wait took the time, still works, with a warning.
func replayWait(cmd *cli.Command) (time.Duration, error) {
	wait, timeout := cmd.Bool("wait"), cmd.Duration("timeout")
	if args := cmd.Args().Slice(); len(args) > 0 {
		d, err := time.ParseDuration(args[0])
		if err != nil || len(args) > 1 || !cmd.IsSet("wait") {
			return 0, usageErrorf(cmd, "unexpected argument %q: replay selects its commands with flags", args[0])
		}
		if d <= 0 {
			fmt.Fprintf(stderr(cmd), "xygroup replay: --wait %s is deprecated: use --wait=false\n", args[0])
			wait = false
		} else {
			fmt.Fprintf(stderr(cmd), "xygroup replay: --wait %s is deprecated: use --wait --timeout %s\n", args[0], args[0])
			timeout = d
		}
	}
	if !wait {
		return 0, nil
	}
	return timeout, nil
}

// unfinished says what of a replay did not end in created: the commands that
// failed again, by class, and the ones still pending, by commandId.
func unfinished(s commands.Summary, wait time.Duration) string {
	var parts []string
	if n := failedAgain(s); n > 0 {
		parts = append(parts, fmt.Sprintf("%s failed again (%s)", plural(n, "command"), classCounts(s.FailedAgain)))
	}
	if s.Pending > 0 {
		const shown = 10
		ids := s.PendingIDs
		more := ""
		if len(ids) > shown {
			ids, more = ids[:shown], fmt.Sprintf(" and %d more", len(ids)-shown)
		}
		verb := "is"
		if s.Pending > 1 {
			verb = "are"
		}
		when := fmt.Sprintf("after %v", wait)
		if wait <= 0 {
			when = "(not waited for: --wait=false)"
		}
		parts = append(parts, fmt.Sprintf("%s %s still pending %s: %s%s", plural(s.Pending, "command"), verb, when, strings.Join(ids, ", "), more))
	}
	return strings.Join(parts, "; ")
}

func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

// resumeCommand is the command line that runs the replay of sel again, which
// resumes it: every selection flag, with absolute times.
func resumeCommand(sel commands.Selection, newIDs bool, id string) string {
	args := []string{"xygroup", "replay"}
	add := func(flag, value string) {
		if value != "" {
			args = append(args, flag, shellQuote(value))
		}
	}
	switch sel.Source {
	case "commands":
		args = append(args, "--from-commands")
	case "file":
		add("--file", sel.File)
	}
	add("--class", strings.Join(sel.Classes, ","))
	add("--meeting", sel.Meeting)
	add("--enterprise", sel.Enterprise)
	if !sel.Since.IsZero() {
		add("--since", sel.Since.UTC().Format(time.RFC3339Nano))
	}
	if !sel.Until.IsZero() {
		add("--until", sel.Until.UTC().Format(time.RFC3339Nano))
	}
	if sel.SeqFrom != 0 {
		add("--seq-from", strconv.FormatUint(sel.SeqFrom, 10))
	}
	if sel.SeqTo != 0 {
		add("--seq-to", strconv.FormatUint(sel.SeqTo, 10))
	}
	if newIDs {
		args = append(args, "--new-ids")
	}
	add("--id", id)
	return strings.Join(args, " ")
}

// replayDeadline reads --deadline: a time, or a duration from now.
func replayDeadline(s string, now time.Time) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		if !t.After(now) {
			return time.Time{}, fmt.Errorf("--deadline %s has passed", s)
		}
		return t, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return time.Time{}, fmt.Errorf("--deadline %q is neither a time (RFC 3339) nor a positive duration (30m)", s)
	}
	return now.Add(d), nil
}

// shellQuote quotes s for a POSIX shell when it needs it.
func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.,:/=+@") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// selection reads the selection flags; the times given as durations are
// resolved later, once (commands.Relative).
func selection(cmd *cli.Command) (commands.Relative, error) {
	var r commands.Relative
	s := commands.Selection{Source: "failed", Meeting: cmd.String("meeting"), Enterprise: cmd.String("enterprise"),
		SeqFrom: cmd.Uint64("seq-from"), SeqTo: cmd.Uint64("seq-to")}
	switch {
	case cmd.Bool("from-commands") && cmd.String("file") != "":
		return r, errors.New("choose --from-commands or --file, not both")
	case cmd.Bool("from-commands"):
		s.Source = "commands"
	case cmd.String("file") != "":
		s.Source, s.File = "file", cmd.String("file")
		raw, err := os.ReadFile(s.File)
		if err != nil {
			return r, fmt.Errorf("--file: %w", err)
		}
		h := sha256.Sum256(raw)
		s.FileHash = hex.EncodeToString(h[:8])
	}
	if (s.SeqFrom != 0 || s.SeqTo != 0) && s.Source != "commands" {
		return r, errors.New("--seq-from and --seq-to go with --from-commands")
	}
	var err error
	if s.Classes, err = failureClasses(cmd.StringSlice("class")); err != nil {
		return r, err
	}
	if len(s.Classes) > 0 && s.Source != "failed" {
		return r, errors.New("--class selects failed events; it does not go with --from-commands or --file")
	}
	if s.Since, r.SinceAgo, err = parseWhenRelative(cmd.String("since")); err != nil {
		return r, fmt.Errorf("--since: %w", err)
	}
	if s.Until, r.UntilAgo, err = parseWhenRelative(cmd.String("until")); err != nil {
		return r, fmt.Errorf("--until: %w", err)
	}
	r.Selection = s
	return r, nil
}

// parseWhenRelative reads an RFC 3339 time, or a duration before the run.
func parseWhenRelative(s string) (time.Time, *time.Duration, error) {
	if s == "" {
		return time.Time{}, nil, nil
	}
	if d, err := time.ParseDuration(s); err == nil {
		return time.Time{}, &d, nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, nil, fmt.Errorf("%q is neither a duration (1h) nor an RFC 3339 time", s)
	}
	return t.UTC(), nil, nil
}

// failureClasses reads --class values (repeated or comma-separated) and
// refuses a class the contract does not have.
func failureClasses(values []string) ([]string, error) {
	var out []string
	for _, c := range values {
		for _, one := range strings.Split(c, ",") {
			if one = strings.TrimSpace(one); one == "" {
				continue
			}
			if !slices.Contains(xylink.Classes, xylink.Class(one)) {
				names := make([]string, len(xylink.Classes))
				for i, k := range xylink.Classes {
					names[i] = string(k)
				}
				return nil, fmt.Errorf("--class %q is not a failure class; the classes are %s", one, strings.Join(names, ", "))
			}
			out = append(out, one)
		}
	}
	return out, nil
}

// finishedNote says, of a replay resumed with everything handled, how to
// replay its selection again: the same name only resumes it.
func finishedNote(done, total int) string {
	if done < total {
		return ""
	}
	return "; it is finished: --id NAME starts another replay of this selection"
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
		fmt.Fprintf(out, " (resuming: %d of %d handled before%s)", cp.Done, len(items), finishedNote(cp.Done, len(items)))
	}
	fmt.Fprintln(out)
	classes := commands.Classes(items)
	names := make([]string, 0, len(classes))
	for c := range classes {
		names = append(names, c)
	}
	sort.Strings(names)
	for _, c := range names {
		fmt.Fprintf(out, "  %-24s %d\n", termSafe(c), classes[c])
	}
	eta := time.Duration(float64(left) / max(rate, 0.001) * float64(time.Second))
	fmt.Fprintf(out, "at %g requests/s (less what live commands use): at least %v; created commands are skipped\n", rate, eta.Round(time.Second))
}

func printSummary(cmd *cli.Command, s commands.Summary) {
	b, _ := json.Marshal(s)
	fmt.Fprintln(stdout(cmd), jsonSafe(b))
	again := strconv.Itoa(failedAgain(s))
	if len(s.FailedAgain) > 0 {
		again += " (" + classCounts(s.FailedAgain) + ")"
	}
	fmt.Fprintln(stderr(cmd), termSafe(fmt.Sprintf("selected %d: published %d, skipped as created %d, handled before %d; outcomes: created %d, failed again %s, pending %d",
		s.Selected, s.Published, s.SkippedDone, s.AlreadyReplayed, s.Created, again, s.Pending)))
}

// classCounts is "rejected 2, unavailable 1": counts per class, by name.
func classCounts(counts map[string]int) string {
	classes := make([]string, 0, len(counts))
	for c, k := range counts {
		classes = append(classes, fmt.Sprintf("%s %d", c, k))
	}
	sort.Strings(classes)
	return strings.Join(classes, ", ")
}

func failedAgain(s commands.Summary) int {
	n := 0
	for _, c := range s.FailedAgain {
		n += c
	}
	return n
}
