package main

import (
	"errors"
	"io"
	"os"
	"time"

	"github.com/rs/zerolog"
	"github.com/urfave/cli/v3"
	"golang.org/x/term"
)

func logFormatFlag() cli.Flag {
	return &cli.StringFlag{Name: "log-format", Value: "json", Usage: "json or console",
		Sources: cli.EnvVars("XYGROUP_LOG_FORMAT"),
		Validator: func(s string) error {
			if s != "json" && s != "console" {
				return errors.New("want json or console")
			}
			return nil
		}}
}

func logLevelFlag() cli.Flag {
	return &cli.StringFlag{Name: "log-level", Value: "info", Usage: "debug, info, warn or error",
		Sources: cli.EnvVars("XYGROUP_LOG_LEVEL"),
		Validator: func(s string) error {
			// zerolog's own error says it defaults to no level; the worker stops instead
			if _, err := zerolog.ParseLevel(s); err != nil {
				return errors.New("want debug, info, warn or error")
			}
			return nil
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
		// Colour codes only for a terminal: a file or a log collector gets
		// plain text. NO_COLOR (no-color.org) turns them off anywhere.
		color := term.IsTerminal(int(os.Stderr.Fd())) && os.Getenv("NO_COLOR") == ""
		l = zerolog.New(zerolog.ConsoleWriter{Out: os.Stderr, TimeFormat: "15:04:05.000", NoColor: !color})
	} else {
		l = zerolog.New(os.Stderr)
	}
	return l.Level(level).With().Timestamp().Str("cmd", cmd.Name).Logger()
}

// stdout and stderr are the root command's writers (os.Stdout and os.Stderr
// unless a test set them).
func stdout(cmd *cli.Command) io.Writer {
	if w := cmd.Root().Writer; w != nil {
		return w
	}
	return os.Stdout
}

func stderr(cmd *cli.Command) io.Writer {
	if w := cmd.Root().ErrWriter; w != nil {
		return w
	}
	return os.Stderr
}
