package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/urfave/cli/v3"

	"github.com/xygroup/xygroup/worker"
	"github.com/xygroup/xygroup/worker/embedded"
	"github.com/xygroup/xygroup/worker/statuspage"
	"github.com/xygroup/xygroup/xylink"
	"github.com/xygroup/xygroup/xylink/sandbox"
)

func workerCommand() *cli.Command {
	flags := append(natsFlags(),
		&cli.StringFlag{Name: "data-dir", Value: "./data", Usage: "the embedded server's storage", Sources: cli.EnvVars("XYGROUP_DATA_DIR")},
		&cli.StringFlag{Name: "xylink-base-url", Value: xylink.DefaultBaseURL, Usage: "XYLink API host", Sources: cli.EnvVars("XYLINK_BASE_URL")},
		&cli.StringFlag{Name: "enterprise-id", Usage: "default tenant", Sources: cli.EnvVars("XYLINK_ENTERPRISE_ID")},
		&cli.StringFlag{Name: "token", Usage: "signature 1.0 key (prefer the variable: flags show in ps)", Sources: cli.EnvVars("XYLINK_TOKEN"), HideDefault: true},
		&cli.StringFlag{Name: "sign-type", Value: "MD5", Usage: "signature 2.0 sign type: MD5, SHA256, HMAC_SHA256", Sources: cli.EnvVars("XYLINK_SIGN_TYPE")},
		&cli.StringFlag{Name: "tenants-file", Usage: "several enterprises and their credentials (JSON)", Sources: cli.EnvVars("XYGROUP_TENANTS_FILE"), TakesFile: true},
		&cli.FloatFlag{Name: "rate", Value: 20, Usage: "API requests per second per enterprise", Sources: cli.EnvVars("XYGROUP_RATE")},
		&cli.IntFlag{Name: "concurrency", Value: 32, Usage: "commands in flight per replica", Sources: cli.EnvVars("XYGROUP_CONCURRENCY")},
		&cli.DurationFlag{Name: "max-horizon", Value: worker.DefaultMaxHorizon, Usage: "how far ahead of its arrival a command's notBefore and deadline may be; beyond it the command fails as invalid_command", Sources: cli.EnvVars("XYGROUP_MAX_HORIZON")},
		&cli.FloatFlag{Name: "parked-tenant-share", Value: worker.DefaultParkedTenantShare, Usage: "the part (0 to 1) of the parked stream's MaxBytes one enterprise's waiting commands may hold; beyond it they fail as over_quota", Sources: cli.EnvVars("XYGROUP_PARKED_TENANT_SHARE")},
		&cli.DurationFlag{Name: "max-wait", Value: 2 * time.Hour, Usage: "how long a command without a deadline waits for its meeting", Sources: cli.EnvVars("XYGROUP_MAX_WAIT")},
		&cli.StringFlag{Name: "http-addr", Value: "127.0.0.1:9090", Usage: "the status page (/), /metrics, /healthz, /readyz", Sources: cli.EnvVars("XYGROUP_HTTP_ADDR")},
		&cli.StringFlag{Name: "http-allowed-hosts", Usage: "names, comma-separated, that the status page answers to besides localhost and IP addresses (a reverse proxy's or a Service's name); others are refused", Sources: cli.EnvVars("XYGROUP_HTTP_ALLOWED_HOSTS")},
		&cli.IntFlag{Name: "http-max-conns", Value: worker.DefaultHTTPLimits.MaxConns, Usage: "connections the HTTP server (status page, metrics, health) holds at once; more wait to be accepted", Sources: cli.EnvVars("XYGROUP_HTTP_MAX_CONNS")},
		&cli.StringFlag{Name: "ui-token", Usage: "enables replay from the status page for whoever gives this token (prefer the variable: flags show in ps); unset: the page is read-only", Sources: cli.EnvVars("XYGROUP_UI_TOKEN"), HideDefault: true},
		&cli.BoolFlag{Name: "sandbox", Usage: "start the XYLink sandbox in-process and use it (with its own credentials)", Sources: cli.EnvVars("XYGROUP_SANDBOX")},
		&cli.StringFlag{Name: "sandbox-listen", Value: "127.0.0.1:8090", Usage: "where --sandbox serves (its admin API included)", Sources: cli.EnvVars("XYGROUP_SANDBOX_LISTEN")},
		&cli.IntFlag{Name: "stream-replicas", Value: 1, Usage: "replicas of the streams the worker creates (3 on a 3-node cluster)", Sources: cli.EnvVars("XYGROUP_STREAM_REPLICAS")},
		&cli.IntFlag{Name: "commands-max-bytes", Value: 1 << 30, Usage: "MaxBytes of the commands stream the worker creates (the parked stream takes the same); full, it refuses new commands", Sources: cli.EnvVars("XYGROUP_COMMANDS_MAX_BYTES")},
		&cli.IntFlag{Name: "events-max-bytes", Value: 1 << 30, Usage: "MaxBytes of the events stream the worker creates; full, it drops its oldest events (README: Streams)", Sources: cli.EnvVars("XYGROUP_EVENTS_MAX_BYTES")},
		&cli.DurationFlag{Name: "events-max-age", Value: 7 * 24 * time.Hour, Usage: "MaxAge of the events stream the worker creates", Sources: cli.EnvVars("XYGROUP_EVENTS_MAX_AGE")},
		&cli.IntFlag{Name: "records-max-bytes", Value: 1 << 30, Usage: "MaxBytes of the commands' records bucket (xygroup-commands) the worker creates", Sources: cli.EnvVars("XYGROUP_RECORDS_MAX_BYTES")},
		&cli.IntFlag{Name: "meetings-max-bytes", Value: 256 << 20, Usage: "MaxBytes of the meetings bucket (xygroup-meetings) the worker creates", Sources: cli.EnvVars("XYGROUP_MEETINGS_MAX_BYTES")},
		&cli.IntFlag{Name: "max-ack-pending", Value: 1000, Usage: "MaxAckPending of the consumer the worker creates", Sources: cli.EnvVars("XYGROUP_MAX_ACK_PENDING")},
		&cli.DurationFlag{Name: "xylink-timeout", Value: 10 * time.Second, Usage: "bound on each XYLink API call", Sources: cli.EnvVars("XYLINK_TIMEOUT")},
		&cli.DurationFlag{Name: "ack-wait", Value: 30 * time.Second, Usage: "AckWait of the consumer the worker creates (a dead replica's commands return after it)", Sources: cli.EnvVars("XYGROUP_ACK_WAIT")},
		&cli.DurationFlag{Name: "rate-guard", Value: 25 * time.Millisecond, Usage: "allowance for varying delay between a grant and the call's arrival at XYLink; grants are (1 s + guard) / rate apart", Sources: cli.EnvVars("XYGROUP_RATE_GUARD")},
		&cli.IntFlag{Name: "rate-shards", Value: 16, Usage: "dispensers the rate limiter spreads enterprises over (one lease each); every replica of a cluster must use the same number", Sources: cli.EnvVars("XYGROUP_RATE_SHARDS")},
		&cli.DurationFlag{Name: "probe-max-interval", Value: 15 * time.Second, Usage: "longest wait between two probes of a meeting that has not started (shorter: faster start, more calls), unless many meetings wait (see --probe-share)", Sources: cli.EnvVars("XYGROUP_PROBE_MAX_INTERVAL")},
		&cli.FloatFlag{Name: "probe-share", Value: 0.5, Usage: "share of each enterprise's rate that probes of waiting meetings may take (0 < share ≤ 1)", Sources: cli.EnvVars("XYGROUP_PROBE_SHARE")},
		&cli.IntFlag{Name: "breaker-failures", Value: 5, Usage: "consecutive API failures, cluster-wide, that open a tenant's circuit breaker", Sources: cli.EnvVars("XYGROUP_BREAKER_FAILURES")},
		&cli.DurationFlag{Name: "breaker-open-for", Value: 10 * time.Second, Usage: "how long an open breaker waits before its one probe", Sources: cli.EnvVars("XYGROUP_BREAKER_OPEN_FOR")},
		&cli.IntFlag{Name: "max-lanes", Value: 64, Usage: "tenant lanes one replica serves at once (each a consumer); the replicas share the open lanes", Sources: cli.EnvVars("XYGROUP_MAX_LANES")},
		&cli.IntFlag{Name: "lane-handlers", Value: 512, Usage: "lane commands in flight per replica, shared by the lanes it serves", Sources: cli.EnvVars("XYGROUP_LANE_HANDLERS")},
		&cli.DurationFlag{Name: "drain-timeout", Value: 20 * time.Second, Usage: "on SIGTERM, how long commands in flight may finish", Sources: cli.EnvVars("XYGROUP_DRAIN_TIMEOUT")},
		logFormatFlag(), logLevelFlag(),
	)
	return &cli.Command{
		Name:   "worker",
		Usage:  "run one worker replica (the main job)",
		Flags:  flags,
		Action: runWorker,
	}
}

func runWorker(ctx context.Context, cmd *cli.Command) error {
	log := newLogger(cmd)
	if cmd.Int("concurrency") < 1 || cmd.Float("rate") <= 0 || cmd.Duration("max-wait") <= 0 || cmd.Duration("max-horizon") <= 0 {
		return cli.Exit("--concurrency, --rate, --max-wait and --max-horizon must be positive", 2)
	}
	if s := cmd.Float("parked-tenant-share"); s <= 0 || s > 1 {
		return cli.Exit("--parked-tenant-share must be above 0 and at most 1", 2)
	}
	if cmd.Int("max-lanes") < 1 || cmd.Int("lane-handlers") < 1 {
		return cli.Exit("--max-lanes (XYGROUP_MAX_LANES) and --lane-handlers (XYGROUP_LANE_HANDLERS) must be at least 1", 2)
	}
	if cmd.Int("http-max-conns") < 1 {
		return cli.Exit("--http-max-conns (XYGROUP_HTTP_MAX_CONNS) must be at least 1", 2)
	}
	if share := cmd.Float("probe-share"); share <= 0 || share > 1 {
		return cli.Exit(fmt.Sprintf("--probe-share (XYGROUP_PROBE_SHARE) must be more than 0 and at most 1, not %g", share), 2)
	}
	var cleanups []func()
	defer func() {
		for i := len(cleanups) - 1; i >= 0; i-- {
			cleanups[i]()
		}
	}()

	// Tracing, when the OTEL_* variables ask for it. Its provider is shut down
	// last, once the worker has drained: what is still batched is exported.
	tp, err := tracingFromEnv(ctx, log.With().Str("component", "tracing").Logger())
	if err != nil {
		return cli.Exit(err.Error(), 2)
	}
	var traced []worker.Option
	var tracedClient []xylink.Option
	if tp != nil {
		cleanups = append(cleanups, func() {
			sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := tp.Shutdown(sctx); err != nil {
				log.Warn().Err(err).Msg("tracing: spans not all exported at the stop")
			}
		})
		traced = append(traced, worker.WithTracerProvider(tp))
		tracedClient = append(tracedClient, xylink.WithTracerProvider(tp))
		log.Info().Msg("tracing: spans exported over OTLP")
	}

	// The configuration's errors come before anything starts.
	var tenants []xylink.Credentials
	if !cmd.Bool("sandbox") {
		if tenants, err = configuredTenants(cmd); err != nil {
			return cli.Exit(err.Error(), 2)
		}
	}

	// The embedded server first: a second worker on the same data directory
	// is refused naming the first one's PID, before any of its ports (the
	// sandbox's, the server's) is found taken by that first worker.
	var srv *embedded.Server
	if cmd.String("nats-url") == "" {
		srv, err = embedded.Start(embedded.Config{Listen: cmd.String("embedded-listen"), StoreDir: cmd.String("data-dir"), Logger: &log})
		if inUse := (*embedded.StoreDirInUseError)(nil); errors.As(err, &inUse) {
			return cli.Exit(err.Error()+": stop that worker, or give this one its own --data-dir (XYGROUP_DATA_DIR)", 1)
		}
		if errors.Is(err, syscall.EADDRINUSE) {
			return cli.Exit(err.Error()+": stop what listens there, or give this worker another --embedded-listen (XYGROUP_EMBEDDED_LISTEN)", 1)
		}
		if err != nil {
			return cli.Exit(err.Error(), 1)
		}
		cleanups = append(cleanups, srv.Stop)
		log.Info().Str("url", srv.ClientURL()).Str("dataDir", cmd.String("data-dir")).Msg("embedded NATS JetStream server started")
	}

	// XYLink: the sandbox, or the configured tenants (above).
	baseURL, defaultEnterprise := cmd.String("xylink-base-url"), cmd.String("enterprise-id")
	if cmd.Bool("sandbox") {
		sb, err := sandbox.Start(sandbox.Config{Rate: cmd.Float("rate"), Logger: log.With().Str("component", "sandbox").Logger(),
			Enterprises: []sandbox.Enterprise{{ID: sandboxEnterprise, Token: sandboxToken, ClientID: sandboxClientID, ClientSecret: sandboxClientSecret}}},
			cmd.String("sandbox-listen"))
		if errors.Is(err, syscall.EADDRINUSE) {
			return cli.Exit(fmt.Sprintf("sandbox: %v: stop what listens there, or give this worker another --sandbox-listen (XYGROUP_SANDBOX_LISTEN)", err), 1)
		}
		if err != nil {
			return cli.Exit(fmt.Sprintf("sandbox: %v", err), 1)
		}
		cleanups = append(cleanups, func() { _ = sb.Close(context.Background()) })
		baseURL, defaultEnterprise = sb.URL, sandboxEnterprise
		tenants = []xylink.Credentials{{EnterpriseID: sandboxEnterprise, Token: sandboxToken}}
		log.Info().Str("url", sb.URL).Str("enterpriseId", sandboxEnterprise).Msg("XYLink sandbox started; calls go to it")
	}
	rates := map[string]float64{}
	for _, t := range tenants {
		if t.Rate > 0 {
			rates[t.EnterpriseID] = t.Rate
		}
	}
	timeout := cmd.Duration("xylink-timeout")
	client, err := xylink.NewClient(baseURL, append(tracedClient, xylink.WithTenants(tenants...), xylink.WithTimeout(timeout),
		xylink.WithLogger(log.With().Str("component", "xylink").Logger()))...)
	if err != nil {
		return cli.Exit(err.Error(), 2)
	}

	// NATS: the configured cluster, or the embedded server. What the client
	// reports (slow consumers, disconnects, reconnects) goes to the JSON log.
	natsLog := worker.NATSLogging(log.With().Str("component", "nats-client").Logger())
	var nc *nats.Conn
	if srv != nil {
		nc, err = srv.Connect(append(natsLog, nats.Name("xygroup-worker"))...)
		if err != nil {
			return cli.Exit(err.Error(), 1)
		}
	} else {
		nc, err = connectNATS(cmd, "xygroup-worker", natsLog...)
		if err != nil {
			return cli.Exit(err.Error(), 1)
		}
	}
	cleanups = append(cleanups, func() { drainAndWait(nc, 10*time.Second) })

	host, _ := os.Hostname()
	w, err := worker.New(nc, client, client, append(traced,
		worker.WithConcurrency(cmd.Int("concurrency")),
		worker.WithLaneLimits(cmd.Int("max-lanes"), cmd.Int("lane-handlers")),
		worker.WithRate(cmd.Float("rate"), rates),
		worker.WithMaxWait(cmd.Duration("max-wait")),
		worker.WithMaxHorizon(cmd.Duration("max-horizon")),
		worker.WithParkedTenantShare(cmd.Float("parked-tenant-share")),
		worker.WithDefaultEnterprise(defaultEnterprise),
		worker.WithDrainTimeout(cmd.Duration("drain-timeout")),
		worker.WithStreams(worker.StreamSettings{Replicas: cmd.Int("stream-replicas"), MaxAckPending: cmd.Int("max-ack-pending"),
			AckWait: cmd.Duration("ack-wait"), CommandsMaxBytes: int64(cmd.Int("commands-max-bytes")),
			EventsMaxBytes: int64(cmd.Int("events-max-bytes")), EventsMaxAge: cmd.Duration("events-max-age"),
			RecordsMaxBytes: int64(cmd.Int("records-max-bytes")), MeetingsMaxBytes: int64(cmd.Int("meetings-max-bytes"))}),
		// A call in flight on a replica that died is treated as unknown once it
		// would have timed out.
		worker.WithCallLease(timeout+5*time.Second),
		worker.WithRateGuard(cmd.Duration("rate-guard")),
		worker.WithRateShards(cmd.Int("rate-shards")),
		worker.WithProbeBackoff(worker.Backoff{Initial: min(5*time.Second, max(time.Second, cmd.Duration("probe-max-interval"))),
			Max: max(time.Second, cmd.Duration("probe-max-interval"))}),
		worker.WithProbeShare(cmd.Float("probe-share")),
		worker.WithBreakerSettings(worker.BreakerSettings{ConsecutiveFailures: uint32(max(1, cmd.Int("breaker-failures"))),
			OpenFor: cmd.Duration("breaker-open-for")}),
		worker.WithSource("xygroup/"+host),
		worker.WithLogger(log),
	)...)
	if err != nil {
		return cli.Exit(err.Error(), 2)
	}
	hosts := splitList(cmd.String("http-allowed-hosts"))
	page, err := statuspage.New(statuspage.Options{JS: w.JetStream(), Inspector: w, DefaultEnterprise: defaultEnterprise,
		Token: cmd.String("ui-token"), Rate: cmd.Float("rate"), AllowedHosts: hosts,
		Log: log.With().Str("component", "status-page").Logger()})
	if err != nil {
		return cli.Exit(fmt.Sprintf("--ui-token (XYGROUP_UI_TOKEN): %v", err), 2)
	}
	hs, err := worker.StartHealthServer(cmd.String("http-addr"), w.Metrics(), w.Checks(), worker.WithPage(page),
		worker.WithAllowedHosts(worker.NewHostAllowList(hosts)), worker.WithHTTPLimits(worker.HTTPLimits{MaxConns: cmd.Int("http-max-conns")}))
	if errors.Is(err, syscall.EADDRINUSE) {
		return cli.Exit(fmt.Sprintf("http: %v: stop what listens there, or give this worker another --http-addr (XYGROUP_HTTP_ADDR)", err), 1)
	}
	if err != nil {
		return cli.Exit(fmt.Sprintf("http: %v", err), 1)
	}
	cleanups = append(cleanups, func() {
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = hs.Close(sctx)
	})
	log.Info().Str("http", hs.Addr()).Int("tenants", len(tenants)).Msg("worker starting")
	return w.Run(ctx)
}

// configuredTenants gathers credentials from the tenants file and from the
// XYLINK_* variables (the default tenant).
func configuredTenants(cmd *cli.Command) ([]xylink.Credentials, error) {
	var tenants []xylink.Credentials
	if path := cmd.String("tenants-file"); path != "" {
		list, err := xylink.LoadTenants(path)
		if err != nil {
			return nil, err
		}
		tenants = list
	}
	id := cmd.String("enterprise-id")
	st, err := xylink.ParseSignType(cmd.String("sign-type"))
	if err != nil {
		return nil, err
	}
	env := xylink.Credentials{EnterpriseID: id, Token: xylink.Secret(cmd.String("token")),
		ClientID: os.Getenv("XYLINK_CLIENT_ID"), ClientSecret: xylink.Secret(os.Getenv("XYLINK_CLIENT_SECRET")), SignType: st}
	if env.V2() {
		env.Token = "" // "when set, 2.0 is used"
	}
	hasKeys := env.Token != "" || env.ClientID != "" || env.ClientSecret != ""
	switch {
	case hasKeys && id == "":
		return nil, errors.New("XYLINK_TOKEN or XYLINK_CLIENT_ID/SECRET is set but XYLINK_ENTERPRISE_ID is not")
	case hasKeys:
		if err := env.Check(); err != nil {
			return nil, err
		}
		for i, t := range tenants {
			if t.EnterpriseID == id {
				tenants = append(tenants[:i], tenants[i+1:]...) // the variables win over the file
				break
			}
		}
		tenants = append(tenants, env)
	}
	if len(tenants) == 0 {
		return nil, errors.New("no XYLink credentials: set XYLINK_ENTERPRISE_ID with XYLINK_TOKEN (signature 1.0) or " +
			"XYLINK_CLIENT_ID and XYLINK_CLIENT_SECRET (2.0), or XYGROUP_TENANTS_FILE; or try --sandbox")
	}
	if id != "" {
		found := false
		for _, t := range tenants {
			found = found || t.EnterpriseID == id
		}
		if !found {
			return nil, fmt.Errorf("XYLINK_ENTERPRISE_ID %q has no credentials", id)
		}
	}
	return tenants, nil
}

// drainAndWait drains nc and returns once it is closed (or after at most
// within): Drain only starts the drain, and an embedded server stopped under
// it would cut the connection, which the client logs as a lost connection.
func drainAndWait(nc *nats.Conn, within time.Duration) {
	closed := make(chan struct{})
	prev := nc.Opts.ClosedCB
	nc.SetClosedHandler(func(c *nats.Conn) {
		if prev != nil {
			prev(c)
		}
		close(closed)
	})
	if err := nc.Drain(); err != nil {
		nc.Close()
		return
	}
	select {
	case <-closed:
	case <-time.After(within):
		nc.Close()
	}
}

// splitList splits a comma-separated list, dropping blanks.
func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}
