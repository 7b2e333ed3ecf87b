package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"slices"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/schollz/progressbar/v3"
	"github.com/urfave/cli/v3"

	"github.com/xygroup/xygroup/worker/commands"
)

func publishCommand() *cli.Command {
	return &cli.Command{
		Name:      "publish",
		Usage:     "publish commands: a JSON object, a JSON array or NDJSON, from files or stdin",
		ArgsUsage: "[FILE|-]...",
		Flags: append(natsFlags(),
			&cli.BoolFlag{Name: "wait", Usage: "wait for each command's terminal event, print it, exit 1 if any failed"},
			&cli.StringFlag{Name: "enterprise-id", Usage: "with --wait, the workers' default tenant, for commands that name no enterpriseId", Sources: cli.EnvVars("XYLINK_ENTERPRISE_ID")},
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
	var waiter *commands.Waiter
	if cmd.Bool("wait") {
		// Subscribed before publishing: no event of these commands can be missed.
		if waiter, err = commands.NewWaiter(ctx, js, commands.RecordLookup(js, cmd.String("enterprise-id"))); err != nil {
			return cli.Exit(err.Error(), 1)
		}
		defer waiter.Close()
	}
	showBar := len(items) >= 100 && !cmd.Bool("no-progress")
	bar := newBar(cmd, showBar, len(items), "publish")
	refs := make([]commands.Ref, 0, len(items))
	for _, it := range items {
		pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		ref, err := commands.Publish(pctx, js, it.Raw, nil)
		cancel()
		if err != nil {
			return cli.Exit(fmt.Sprintf("%s: %v", it.Where(), err), 1)
		}
		refs = append(refs, ref)
		_ = bar.Add(1)
	}
	_ = bar.Finish()
	fmt.Fprintf(stderr(cmd), "published %d command(s)\n", len(refs))
	if waiter == nil {
		return nil
	}
	wctx, wcancel := context.WithTimeout(ctx, cmd.Duration("timeout"))
	defer wcancel()
	failed := 0
	bar = newBar(cmd, showBar, len(refs), "wait")
	err = waiter.Await(wctx, refs, func(e commands.Event) {
		fmt.Fprintln(stdout(cmd), jsonSafe(e.Data))
		if e.Failed {
			failed++
		}
		_ = bar.Add(1)
	})
	_ = bar.Finish()
	if err != nil {
		if cmd.String("enterprise-id") == "" && slices.ContainsFunc(refs, func(r commands.Ref) bool { return r.EnterpriseID == "" }) {
			err = fmt.Errorf("%w (a command that names no enterpriseId and ended before is found in the workers' records "+
				"under their default tenant: set XYLINK_ENTERPRISE_ID or --enterprise-id)", err)
		}
		return cli.Exit(err.Error(), 1)
	}
	if failed > 0 {
		return cli.Exit(fmt.Sprintf("%d of %d command(s) failed", failed, len(refs)), 1)
	}
	return nil
}

// newBar is a progress bar on stderr, or one that draws nothing.
func newBar(cmd *cli.Command, show bool, total int, what string) *progressbar.ProgressBar {
	if !show {
		return progressbar.DefaultSilent(int64(total))
	}
	return progressbar.NewOptions(total, progressbar.OptionSetWriter(stderr(cmd)), progressbar.OptionSetDescription(what),
		progressbar.OptionShowCount(), progressbar.OptionShowIts(), progressbar.OptionSetItsString("cmd"),
		progressbar.OptionSetPredictTime(true), progressbar.OptionThrottle(200*time.Millisecond), progressbar.OptionClearOnFinish())
}
