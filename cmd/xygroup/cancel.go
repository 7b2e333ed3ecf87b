package main

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/urfave/cli/v3"

	"github.com/xygroup/xygroup/worker/commands"
)

func cancelCommand() *cli.Command {
	return &cli.Command{
		Name:  "cancel",
		Usage: "cancel a command, or a meeting's commands, before they are sent",
		Flags: append(natsFlags(),
			&cli.StringFlag{Name: "command", Usage: "the commandId to cancel"},
			&cli.StringFlag{Name: "meeting", Usage: "cancel every command of this meeting not sent yet"},
			&cli.StringFlag{Name: "enterprise", Usage: "the commands' enterpriseId (default: the workers' default tenant)"},
			&cli.StringFlag{Name: "reason", Usage: "why; carried by the cancelled events and the answers"},
			&cli.BoolFlag{Name: "wait", Usage: "print the outcomes: failed.cancelled events and cancel_rejected answers; exit 1 if any was rejected"},
			&cli.DurationFlag{Name: "timeout", Value: time.Minute, Usage: "with --wait, how long to wait for a command's outcome"},
			&cli.DurationFlag{Name: "window", Value: 5 * time.Second, Usage: "with --wait and --meeting, how long to read outcomes after the first"},
		),
		Action: runCancel,
	}
}

func runCancel(ctx context.Context, cmd *cli.Command) error {
	if cmd.Args().Len() > 0 {
		return usageErrorf(cmd, "unexpected argument %q: name what to cancel with --command or --meeting", cmd.Args().First())
	}
	req := commands.CancelRequest{CommandID: cmd.String("command"), MeetingRoomNumber: cmd.String("meeting"),
		EnterpriseID: cmd.String("enterprise"), Reason: cmd.String("reason")}
	if (req.CommandID == "") == (req.MeetingRoomNumber == "") {
		return usageErrorf(cmd, "name what to cancel: --command ID or --meeting NUMBER, one of them")
	}
	nc, err := connectNATS(cmd, "xygroup-cancel")
	if err != nil {
		return cli.Exit(err.Error(), 1)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	since := time.Now().Add(-time.Second) // the events stream's clock may be a little behind
	pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	id, err := commands.Cancel(pctx, js, req)
	cancel()
	if err != nil {
		return cli.Exit(err.Error(), 1)
	}
	fmt.Fprintf(stderr(cmd), "cancel %s published\n", id)
	if !cmd.Bool("wait") {
		return nil
	}
	if req.CommandID != "" {
		fmt.Fprintf(stderr(cmd), "waiting up to %s (--timeout) for its outcome\n", cmd.Duration("timeout"))
	} else {
		fmt.Fprintf(stderr(cmd), "waiting up to %s (--timeout) for the first outcome, then %s (--window) for more\n", cmd.Duration("timeout"), cmd.Duration("window"))
	}
	wctx, wcancel := context.WithTimeout(ctx, cmd.Duration("timeout"))
	defer wcancel()
	outs, err := commands.AwaitCancel(wctx, js, req, id, since, cmd.Duration("window"))
	if err != nil && ctx.Err() == nil {
		return cli.Exit(err.Error(), 1)
	}
	rejected := 0
	for _, o := range outs {
		fmt.Fprintln(stdout(cmd), jsonSafe(o.Raw))
		if !o.Cancelled() {
			rejected++
		}
	}
	switch {
	case len(outs) == 0 && ctx.Err() != nil: // Ctrl-C
		return cli.Exit(fmt.Sprintf("cancel %s: interrupted before any outcome (the cancel is published: it is carried out all the same)", id), 1)
	case len(outs) == 0 && req.MeetingRoomNumber != "":
		// A cancel by meeting names no commands: no outcome may mean none to cancel.
		return cli.Exit(fmt.Sprintf("cancel %s: no outcome within %s: meeting %s had no command waiting to be sent, or no worker has handled the cancel "+
			"(commands published after it are not cancelled)", id, cmd.Duration("timeout"), req.MeetingRoomNumber), 1)
	case len(outs) == 0:
		return cli.Exit(fmt.Sprintf("cancel %s: no outcome within %s (a command not published yet ends cancelled when it is)", id, cmd.Duration("timeout")), 1)
	case rejected > 0:
		return cli.Exit(fmt.Sprintf("cancel %s: %d of %d command(s) not cancelled", id, rejected, len(outs)), 1)
	}
	return nil
}
