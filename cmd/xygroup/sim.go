package main

import (
	"context"
	"fmt"
	"time"

	"github.com/urfave/cli/v3"

	"github.com/xygroup/xygroup/xylink/sandbox"
)

// Sandbox credentials that work out of the box; `worker --sandbox` uses the same.
const (
	sandboxEnterprise   = "sandbox-enterprise"
	sandboxToken        = "sandbox-token"
	sandboxClientID     = "sandbox-client"
	sandboxClientSecret = "sandbox-client-secret"
)

func simCommand() *cli.Command {
	return &cli.Command{
		Name:  "sim",
		Usage: "run the XYLink sandbox: the dynamicGroup API, its token endpoints and an admin API",
		Description: "Serves a stand-in of XYLink's breakout-group API that verifies signatures 1.0 and 2.0,\n" +
			"keeps meetings, enforces the per-enterprise rate and injects faults. See the README for the admin API.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "listen", Value: "127.0.0.1:8090", Usage: "address to serve on", Sources: cli.EnvVars("XYGROUP_SIM_LISTEN")},
			&cli.StringFlag{Name: "enterprise-id", Value: sandboxEnterprise, Usage: "the enterprise the sandbox accepts", Sources: cli.EnvVars("XYLINK_ENTERPRISE_ID")},
			&cli.StringFlag{Name: "token", Value: sandboxToken, Usage: "its signature 1.0 key", Sources: cli.EnvVars("XYLINK_TOKEN")},
			&cli.StringFlag{Name: "client-id", Value: sandboxClientID, Usage: "its signature 2.0 client id", Sources: cli.EnvVars("XYLINK_CLIENT_ID")},
			&cli.StringFlag{Name: "client-secret", Value: sandboxClientSecret, Usage: "its signature 2.0 client secret", Sources: cli.EnvVars("XYLINK_CLIENT_SECRET")},
			&cli.FloatFlag{Name: "rate", Value: 20, Usage: "requests per sliding second per enterprise; the excess gets HTTP 429", Sources: cli.EnvVars("XYGROUP_SIM_RATE")},
			&cli.IntFlag{Name: "max-groups", Value: 50, Usage: "a meeting's default maximum group count (66685 above it)"},
			&cli.DurationFlag{Name: "token-ttl", Value: 2 * time.Hour, Usage: "lifetime of a 2.0 access token"},
			&cli.DurationFlag{Name: "latency", Usage: "delay every answer (after processing) by this much"},
			&cli.FloatFlag{Name: "error-ratio", Usage: "share of requests (0..1) answered HTTP 500"},
			logFormatFlag(), logLevelFlag(),
		},
		Action: runSim,
	}
}

func runSim(ctx context.Context, cmd *cli.Command) error {
	log := newLogger(cmd)
	ratio := cmd.Float("error-ratio")
	if ratio < 0 || ratio > 1 {
		return cli.Exit("--error-ratio must be within 0..1", 2)
	}
	if cmd.Float("rate") <= 0 {
		return cli.Exit("--rate must be positive", 2)
	}
	cfg := sandbox.Config{
		Enterprises: []sandbox.Enterprise{{ID: cmd.String("enterprise-id"), Token: cmd.String("token"),
			ClientID: cmd.String("client-id"), ClientSecret: cmd.String("client-secret")}},
		Rate: cmd.Float("rate"), TokenTTL: cmd.Duration("token-ttl"), MaxGroups: cmd.Int("max-groups"),
		Faults: sandbox.Faults{Latency: sandbox.Duration(cmd.Duration("latency")), ErrorRatio: ratio},
		Logger: log,
	}
	srv, err := sandbox.Start(cfg, cmd.String("listen"))
	if err != nil {
		return cli.Exit(fmt.Sprintf("sim: listen: %v", err), 1)
	}
	log.Info().Str("url", srv.URL).Str("enterpriseId", cmd.String("enterprise-id")).Float64("rate", cfg.Rate).
		Msg("XYLink sandbox listening")
	<-ctx.Done()
	log.Info().Msg("stopping")
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return srv.Close(sctx)
}
