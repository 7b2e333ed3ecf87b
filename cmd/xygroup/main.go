// Command xygroup is a NATS JetStream worker that creates XYLink breakout groups,
// and the tools around it: publish, events, replay, status, and the XYLink sandbox.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/urfave/cli/v3"
)

// version is set by the build (-ldflags "-X main.version=...").
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := newApp().Run(ctx, os.Args); err != nil {
		fmt.Fprintln(os.Stderr, "xygroup:", err)
		os.Exit(exitCode(err))
	}
}

func newApp() *cli.Command {
	return &cli.Command{
		Name:    "xygroup",
		Usage:   "create XYLink breakout groups from NATS JetStream commands",
		Version: version,
		// main prints the error and picks the exit code; Run itself never exits.
		ExitErrHandler: func(context.Context, *cli.Command, error) {},
		Commands: []*cli.Command{
			workerCommand(),
			publishCommand(),
			eventsCommand(),
			replayCommand(),
			simCommand(),
			statusCommand(),
			healthCommand(),
		},
	}
}

func exitCode(err error) int {
	if ec, ok := err.(cli.ExitCoder); ok {
		return ec.ExitCode()
	}
	return 1
}
