// Package embedded runs a NATS server with JetStream inside the process: the
// worker's default when no NATS_URL is given, and the server of the tests.
package embedded

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"
)

// Config of an embedded server.
type Config struct {
	// Listen is host:port for clients ("127.0.0.1:4222"; port 0 picks one;
	// empty: no TCP listener, in-process connections only).
	Listen string
	// StoreDir holds JetStream's files. The server holds it locked (LockFile)
	// while it runs: a second server on it, in this process or another, fails
	// to start with a *StoreDirInUseError.
	StoreDir string
	// Name of the server (default "xygroup-embedded").
	Name string
	// Cluster settings, for tests of a cluster in one process: the cluster's
	// name, this node's route listener and the other nodes' routes.
	ClusterName   string
	ClusterListen string
	Routes        []string
	Logger        *zerolog.Logger
}

// Server is a running embedded server.
type Server struct {
	*server.Server
	inProcess bool
	lock      *dirLock
}

// Start starts the server and waits until it accepts connections.
func Start(cfg Config) (*Server, error) {
	opts := &server.Options{
		ServerName: cfg.Name,
		JetStream:  true,
		StoreDir:   cfg.StoreDir,
		NoSigs:     true,
		MaxPayload: 1 << 20,
	}
	if opts.ServerName == "" {
		opts.ServerName = "xygroup-embedded"
	}
	if cfg.Listen == "" {
		opts.DontListen = true
	} else {
		host, port, err := splitHostPort(cfg.Listen)
		if err != nil {
			return nil, fmt.Errorf("embedded NATS: listen %q: %w", cfg.Listen, err)
		}
		opts.Host, opts.Port = host, port
		if port == 0 {
			opts.Port = server.RANDOM_PORT
		}
	}
	if cfg.ClusterName != "" {
		host, port, err := splitHostPort(cfg.ClusterListen)
		if err != nil {
			return nil, fmt.Errorf("embedded NATS: cluster listen %q: %w", cfg.ClusterListen, err)
		}
		opts.Cluster = server.ClusterOpts{Name: cfg.ClusterName, Host: host, Port: port}
		opts.Routes = server.RoutesFromStr(joinRoutes(cfg.Routes))
	}
	var lock *dirLock
	if cfg.StoreDir != "" {
		var err error
		if lock, err = lockStoreDir(cfg.StoreDir); err != nil {
			return nil, err
		}
	}
	s, err := server.NewServer(opts)
	if err != nil {
		lock.unlock()
		return nil, fmt.Errorf("embedded NATS: %w", err)
	}
	// The server reports a failed start (a port in use, a store it cannot
	// write) only to its logger, as a fatal error, and then never becomes
	// ready: the first one ends the start at once, as its error.
	fatal := make(chan error, 1)
	log := zerolog.Nop()
	if cfg.Logger != nil {
		log = cfg.Logger.With().Str("component", "nats-server").Logger()
	}
	s.SetLoggerV2(&logAdapter{l: log, fatal: fatal, listen: cfg.Listen}, false, false, false)
	go s.Start()
	if err := awaitReady(s, fatal, 30*time.Second); err != nil {
		s.Shutdown()
		s.WaitForShutdown()
		lock.unlock()
		return nil, err
	}
	if !opts.DontListen && !loopback(opts.Host) {
		addr := cfg.Listen
		if a := s.Addr(); a != nil {
			addr = a.String()
		}
		log.Warn().Str("listen", addr).Msg("the embedded NATS server listens beyond loopback without authentication or TLS: " +
			"whoever reaches " + addr + " can publish commands, read every event and delete the streams; " +
			"listen on 127.0.0.1 (--embedded-listen), or run a NATS cluster with users and TLS (NATS_URL)")
	}
	return &Server{Server: s, inProcess: opts.DontListen, lock: lock}, nil
}

// loopback: host (an IP or a name) reaches this machine only. An empty host
// or an unspecified address (0.0.0.0, ::) listens on every interface.
func loopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// awaitReady waits until s accepts connections, its first fatal error, or the
// timeout.
func awaitReady(s *server.Server, fatal <-chan error, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		select {
		case err := <-fatal:
			return err
		default:
		}
		if s.ReadyForConnections(50 * time.Millisecond) {
			return nil
		}
		if time.Now().After(deadline) {
			select {
			case err := <-fatal:
				return err
			default:
			}
			return fmt.Errorf("embedded NATS: not ready within %v", timeout)
		}
	}
}

// Connect opens a client connection: in-process when the server does not listen.
func (s *Server) Connect(opts ...nats.Option) (*nats.Conn, error) {
	if s.inProcess {
		return nats.Connect("", append(opts, nats.InProcessServer(s.Server))...)
	}
	return nats.Connect(s.ClientURL(), opts...)
}

// Stop shuts the server down, waits for it, and unlocks its data directory.
func (s *Server) Stop() {
	s.Shutdown()
	s.WaitForShutdown()
	s.lock.unlock()
	s.lock = nil
}

func splitHostPort(hp string) (string, int, error) {
	host, p, err := net.SplitHostPort(hp)
	if err != nil {
		return "", 0, err
	}
	port, err := strconv.Atoi(p)
	if err != nil {
		return "", 0, err
	}
	return host, port, nil
}

func joinRoutes(routes []string) string {
	out := ""
	for i, r := range routes {
		if i > 0 {
			out += ","
		}
		out += r
	}
	return out
}

// logAdapter sends the server's log to zerolog, and its first fatal error to
// fatal.
type logAdapter struct {
	l      zerolog.Logger
	fatal  chan<- error
	listen string
}

func (a *logAdapter) Noticef(f string, v ...any) { a.l.Debug().Msgf(f, v...) } // the banner is noise at info
func (a *logAdapter) Warnf(f string, v ...any)   { a.l.Warn().Msgf(f, v...) }
func (a *logAdapter) Errorf(f string, v ...any)  { a.l.Error().Msgf(f, v...) }
func (a *logAdapter) Debugf(f string, v ...any)  { a.l.Debug().Msgf(f, v...) }
func (a *logAdapter) Tracef(f string, v ...any)  { a.l.Trace().Msgf(f, v...) }

func (a *logAdapter) Fatalf(f string, v ...any) {
	a.l.Error().Msgf(f, v...)
	select {
	case a.fatal <- startError(f, v, a.listen):
	default: // the first one is the cause
	}
}

// startError names the cause of a fatal error of the server: the system's
// error when it passed one ("listen 127.0.0.1:4222: address already in use"),
// else its own message.
func startError(f string, v []any, listen string) error {
	for _, x := range v {
		err, ok := x.(error)
		if !ok {
			continue
		}
		var op *net.OpError
		if errors.As(err, &op) && op.Op == "listen" {
			var sys *os.SyscallError
			cause := op.Err
			if errors.As(cause, &sys) {
				cause = sys.Err
			}
			addr := listen
			if op.Addr != nil {
				addr = op.Addr.String()
			}
			return fmt.Errorf("embedded NATS: listen %s: %w", addr, cause)
		}
	}
	return fmt.Errorf("embedded NATS: %s", fmt.Sprintf(f, v...))
}
