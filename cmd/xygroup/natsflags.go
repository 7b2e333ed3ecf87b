package main

import (
	"fmt"
	neturl "net/url"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/urfave/cli/v3"
)

// natsFlags are the connection settings every NATS-facing subcommand shares.
func natsFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "nats-url", Usage: "NATS servers; empty: the worker's embedded server", Sources: cli.EnvVars("NATS_URL")},
		&cli.StringFlag{Name: "nats-creds", Usage: "NATS credentials file (NKEY/JWT)", Sources: cli.EnvVars("NATS_CREDS"), TakesFile: true},
		&cli.StringFlag{Name: "nats-ca", Usage: "CA certificate (PEM) to verify the NATS servers' TLS", Sources: cli.EnvVars("NATS_CA"), TakesFile: true},
		&cli.StringFlag{Name: "nats-cert", Usage: "client certificate (PEM) for NATS mutual TLS", Sources: cli.EnvVars("NATS_CERT"), TakesFile: true},
		&cli.StringFlag{Name: "nats-key", Usage: "its private key (PEM)", Sources: cli.EnvVars("NATS_KEY"), TakesFile: true},
		&cli.StringFlag{Name: "nats-inbox-prefix", Usage: "prefix of this client's reply subjects (e.g. _INBOX_publisher): the user's own, so that it may subscribe only there", Sources: cli.EnvVars("NATS_INBOX_PREFIX")},
		&cli.StringFlag{Name: "embedded-listen", Value: "127.0.0.1:4222", Usage: "where the embedded server listens", Sources: cli.EnvVars("XYGROUP_EMBEDDED_LISTEN")},
	}
}

// connectNATS connects to NATS_URL, or to the embedded server's address when it
// is empty; extra options (the worker's log handlers) come last.
func connectNATS(cmd *cli.Command, name string, extra ...nats.Option) (*nats.Conn, error) {
	url := cmd.String("nats-url")
	if url == "" {
		url = "nats://" + cmd.String("embedded-listen")
	}
	opts := []nats.Option{nats.Name(name), nats.MaxReconnects(-1), nats.ReconnectWait(500 * time.Millisecond), nats.Timeout(5 * time.Second)}
	if creds := cmd.String("nats-creds"); creds != "" {
		opts = append(opts, nats.UserCredentials(creds))
	}
	if prefix := cmd.String("nats-inbox-prefix"); prefix != "" {
		opts = append(opts, nats.CustomInboxPrefix(prefix))
	}
	if ca := cmd.String("nats-ca"); ca != "" {
		opts = append(opts, nats.RootCAs(ca))
	}
	if cert, key := cmd.String("nats-cert"), cmd.String("nats-key"); cert != "" || key != "" {
		if cert == "" || key == "" {
			return nil, fmt.Errorf("--nats-cert and --nats-key go together")
		}
		opts = append(opts, nats.ClientCert(cert, key))
	}
	nc, err := nats.Connect(url, append(opts, extra...)...)
	if err != nil {
		return nil, fmt.Errorf("connect to NATS at %s: %w (is a worker or NATS server running?)", redactURLs(url), err)
	}
	return nc, nil
}

// redactURLs hides passwords and tokens in a list of NATS URLs.
func redactURLs(list string) string {
	parts := strings.Split(list, ",")
	for i, p := range parts {
		u, err := neturl.Parse(strings.TrimSpace(p))
		if err != nil {
			parts[i] = "[unparseable url]"
			continue
		}
		if u.User != nil {
			u.User = neturl.User("[redacted]")
		}
		parts[i] = u.String()
	}
	return strings.Join(parts, ",")
}
