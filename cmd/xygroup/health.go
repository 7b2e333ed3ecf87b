package main

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/urfave/cli/v3"
)

// healthCommand lets a container check itself without a shell or curl in the image.
func healthCommand() *cli.Command {
	return &cli.Command{
		Name:  "health",
		Usage: "exit 0 if the URL answers 200 (for container healthchecks)",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "url", Value: "http://127.0.0.1:9090/healthz", Usage: "what to ask"},
			&cli.DurationFlag{Name: "timeout", Value: 3 * time.Second, Usage: "how long to wait for the answer; no answer within it exits 1"},
		},
		Action: func(ctx context.Context, cmd *cli.Command) error {
			ctx, cancel := context.WithTimeout(ctx, cmd.Duration("timeout"))
			defer cancel()
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, cmd.String("url"), nil)
			if err != nil {
				return cli.Exit(err.Error(), 2)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				return cli.Exit(err.Error(), 1)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				return cli.Exit(fmt.Sprintf("%s answered %s", cmd.String("url"), resp.Status), 1)
			}
			return nil
		},
	}
}
