package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/rs/zerolog"
	"github.com/urfave/cli/v3"
)

func logFormatFlag() cli.Flag {
	return &cli.StringFlag{Name: "log-format", Value: "json", Usage: "json or console",
		Sources: cli.EnvVars("XYGROUP_LOG_FORMAT"),
		Validator: func(s string) error {
			if s != "json" && s != "console" {
				return fmt.Errorf("--log-format must be json or console, not %q", s)
			}
			return nil
		}}
}

func logLevelFlag() cli.Flag {
	return &cli.StringFlag{Name: "log-level", Value: "info", Usage: "debug, info, warn or error",
		Sources: cli.EnvVars("XYGROUP_LOG_LEVEL"),
		Validator: func(s string) error {
			_, err := zerolog.ParseLevel(s)
			return err
		}}
}

// newLogger writes structured JSON lines to stderr, or a readable console format.
func newLogger(cmd *cli.Command) zerolog.Logger {
	level, _ := zerolog.ParseLevel(cmd.String("log-level"))
	if level == zerolog.NoLevel {
		level = zerolog.InfoLevel
	}
	zerolog.TimeFieldFormat = time.RFC3339Nano
	var l zerolog.Logger
	if cmd.String("log-format") == "console" {
		l = zerolog.New(zerolog.ConsoleWriter{Out: os.Stderr, TimeFormat: "15:04:05.000"})
	} else {
		l = zerolog.New(os.Stderr)
	}
	return l.Level(level).With().Timestamp().Str("cmd", cmd.Name).Logger()
}

// notYet is the action of a subcommand that this version does not have yet.
func notYet(_ context.Context, cmd *cli.Command) error {
	return cli.Exit(fmt.Sprintf("%s: not available in this version yet", cmd.Name), 3)
}
