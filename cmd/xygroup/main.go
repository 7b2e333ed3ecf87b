// Command xygroup is a NATS JetStream worker that creates XYLink breakout groups,
// and the tools around it: publish, events, replay, status, and the XYLink sandbox.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/urfave/cli/v3"
)

// version is set by the build (-ldflags "-X main.version=...").
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := newApp().Run(ctx, os.Args); err != nil {
		fmt.Fprintln(os.Stderr, "xygroup:", errorMessage(err))
		os.Exit(exitCode(err))
	}
}

func newApp() *cli.Command {
	app := &cli.Command{
		Name:    "xygroup",
		Usage:   "create XYLink breakout groups from NATS JetStream commands",
		Version: version,
		// main prints the error and picks the exit code; Run itself never exits.
		ExitErrHandler: func(context.Context, *cli.Command, error) {},
		Commands: []*cli.Command{
			workerCommand(),
			publishCommand(),
			cancelCommand(),
			eventsCommand(),
			replayCommand(),
			simCommand(),
			statusCommand(),
			healthCommand(),
		},
		Action: runRoot,
	}
	// A usage error is one line naming what was typed, not a page of help.
	var set func(*cli.Command)
	set = func(c *cli.Command) {
		c.OnUsageError = onUsageError
		for _, sub := range c.Commands {
			set(sub)
		}
	}
	set(app)
	return app
}

// runRoot shows the help, or refuses a command that does not exist (without
// an action of its own, the root would print "No help topic" and exit 3).
func runRoot(ctx context.Context, cmd *cli.Command) error {
	if name := cmd.Args().First(); name != "" {
		names := make([]string, 0, len(cmd.Commands))
		for _, c := range cmd.Commands {
			if !c.Hidden && c.Name != "help" {
				names = append(names, c.Name)
			}
		}
		return usageErrorf(cmd, "unknown command %q (commands: %s)", name, strings.Join(names, ", "))
	}
	return cli.ShowRootCommandHelp(cmd)
}

// usageError: the command line is wrong. Exit code 2, and a pointer to the help.
type usageError struct {
	msg, command string
}

func (e *usageError) Error() string {
	return fmt.Sprintf("%s; run '%s --help' for usage", e.msg, e.command)
}

func (e *usageError) ExitCode() int { return 2 }

func usageErrorf(cmd *cli.Command, format string, a ...any) error {
	return &usageError{msg: fmt.Sprintf(format, a...), command: cmd.FullName()}
}

var (
	undefinedFlag = regexp.MustCompile(`^flag provided but not defined: -+(.+)$`)
	invalidValue  = regexp.MustCompile(`^invalid value (".*") for flag -+([^:]+): (.*)$`)
	missingValue  = regexp.MustCompile(`^flag needs an argument: -*(.+)$`)
)

// onUsageError rewrites the parser's messages, which name flags with one dash
// whatever was typed, to name them as they are written (--name).
func onUsageError(_ context.Context, cmd *cli.Command, err error, _ bool) error {
	msg := err.Error()
	if m := undefinedFlag.FindStringSubmatch(msg); m != nil {
		msg = "unknown flag " + dashed(m[1])
	} else if m := invalidValue.FindStringSubmatch(msg); m != nil {
		msg = fmt.Sprintf("invalid value %s for %s: %s", m[1], dashed(m[2]), expected(m[3]))
		if v, err := strconv.Unquote(m[1]); err == nil && m[2] == "wait" && isDuration(v) {
			msg = fmt.Sprintf("--wait is a switch (wait or not): give how long with --timeout %s", v)
		}
	} else if m := missingValue.FindStringSubmatch(msg); m != nil {
		msg = dashed(m[1]) + " needs a value"
	}
	return &usageError{msg: msg, command: cmd.FullName()}
}

// expected turns the parser's cause (strconv.ParseFloat: parsing "abc":
// invalid syntax) into what the flag takes.
func expected(cause string) string {
	switch {
	case strings.Contains(cause, "out of range"):
		return "out of range"
	case strings.HasPrefix(cause, "strconv.ParseFloat"):
		return "want a number, such as 20 or 0.5"
	case strings.HasPrefix(cause, "strconv.ParseInt"), strings.HasPrefix(cause, "strconv.ParseUint"):
		return "want a whole number, such as 32"
	case strings.HasPrefix(cause, "time: "):
		return "want a duration, such as 500ms, 30s, 5m or 1h"
	case strings.HasPrefix(cause, "strconv.ParseBool"), cause == "parse error":
		return "want true or false"
	}
	return cause
}

func isDuration(s string) bool {
	_, err := time.ParseDuration(s)
	return err == nil
}

func dashed(name string) string {
	if len(name) == 1 {
		return "-" + name
	}
	return "--" + name
}

// errorMessage never leaves the line after "xygroup:" empty; an error may quote
// a command or an answer, printed escaped (termSafeLines).
func errorMessage(err error) string {
	if msg := strings.TrimSpace(err.Error()); msg != "" {
		return termSafeLines(msg)
	}
	return fmt.Sprintf("failed (exit code %d)", exitCode(err))
}

func exitCode(err error) int {
	var ec cli.ExitCoder
	if errors.As(err, &ec) {
		return ec.ExitCode()
	}
	return 1
}
