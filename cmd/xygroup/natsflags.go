package main

import (
	"errors"
	"fmt"
	"net"
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
	if err := checkNATSURLs(url); err != nil {
		return nil, err
	}
	nc, err := nats.Connect(url, append(opts, extra...)...)
	if errors.Is(err, nats.ErrNoServers) {
		return nil, fmt.Errorf("connect to NATS at %s: no server answered at that address (is a worker or NATS server running and listening there?)", redactURLs(url))
	}
	if netErr := net.Error(nil); errors.As(err, &netErr) && netErr.Timeout() {
		// A TCP connection, but no NATS greeting: an HTTP port, another service.
		return nil, fmt.Errorf("connect to NATS at %s: something listens at that address but did not answer as a NATS server within 5s "+
			"(is it a NATS client port? the worker's embedded server is nats://127.0.0.1:4222, its status page is not NATS)", redactURLs(url))
	}
	if err != nil {
		return nil, fmt.Errorf("connect to NATS at %s: %s (is a worker or NATS server running?)", redactURLs(url), scrubSecrets(err.Error(), url))
	}
	return nc, nil
}

// A NATS URL's user information (user:password or a token) is everything
// between "://" and the last "@": split as text, not by a URL parser, so that a
// password with a '#', '/', '?' or space, which a parser reads as the end of the
// host, never shows. NATS URLs have no path in which an '@' could stand.
func splitUserinfo(u string) (scheme, userinfo, host string) {
	u = strings.TrimSpace(u)
	rest := u
	if i := strings.Index(u, "://"); i >= 0 {
		scheme, rest = u[:i+3], u[i+3:]
	}
	if at := strings.LastIndex(rest, "@"); at >= 0 {
		return scheme, rest[:at], rest[at+1:]
	}
	return scheme, "", rest
}

// redactURLs hides passwords and tokens in a list of NATS URLs.
func redactURLs(list string) string {
	parts := strings.Split(list, ",")
	for i, p := range parts {
		scheme, userinfo, host := splitUserinfo(p)
		if userinfo != "" {
			parts[i] = scheme + "[redacted]@" + host
		} else {
			parts[i] = scheme + host
		}
	}
	return strings.Join(parts, ",")
}

// checkNATSURLs refuses a URL that the NATS client would read otherwise than
// it is written (a '#', '/', '?' or space in a password ends its host early; a
// '%' starts an escape): without the parser's message, which quotes the URL.
func checkNATSURLs(list string) error {
	for _, p := range strings.Split(list, ",") {
		scheme, userinfo, host := splitUserinfo(p)
		if scheme == "" {
			scheme = "nats://" // as the client reads it
		}
		u, err := neturl.Parse(scheme + userinfo + "@" + host)
		if userinfo == "" {
			u, err = neturl.Parse(scheme + host)
		}
		if err != nil || u.Host != host {
			return fmt.Errorf("NATS URL %s cannot be read: a password or token with '%%', '#', '/', '?' or a space must be percent-encoded (%%25, %%23, %%2F, %%3F, %%20)", redactURLs(p))
		}
	}
	return nil
}

// scrubSecrets removes from msg the user information of every URL in list,
// as written and as decoded, should an error of the client ever quote it.
func scrubSecrets(msg, list string) string {
	for _, p := range strings.Split(list, ",") {
		_, userinfo, _ := splitUserinfo(p)
		secrets := []string{userinfo}
		if u, err := neturl.Parse(strings.TrimSpace(p)); err == nil && u.User != nil {
			pw, _ := u.User.Password()
			secrets = append(secrets, u.User.Username(), pw)
		}
		for _, s := range secrets {
			if len(s) >= 4 { // shorter ones would blank out ordinary words
				msg = strings.ReplaceAll(msg, s, "[redacted]")
			}
		}
	}
	return msg
}
