// Package embedded runs a NATS server with JetStream inside the process: the
// worker's default when no NATS_URL is given, and the server of the tests.
package embedded

import (
	"fmt"
	"net"
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
	if cfg.Logger != nil {
		s.SetLoggerV2(&logAdapter{l: cfg.Logger.With().Str("component", "nats-server").Logger()}, false, false, false)
	}
	go s.Start()
	if !s.ReadyForConnections(30 * time.Second) {
		s.Shutdown()
		s.WaitForShutdown()
		lock.unlock()
		return nil, fmt.Errorf("embedded NATS: not ready within 30s (is %s free?)", cfg.Listen)
	}
	return &Server{Server: s, inProcess: opts.DontListen, lock: lock}, nil
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

// logAdapter sends the server's log to zerolog.
type logAdapter struct{ l zerolog.Logger }

func (a *logAdapter) Noticef(f string, v ...any) { a.l.Debug().Msgf(f, v...) } // the banner is noise at info
func (a *logAdapter) Warnf(f string, v ...any)   { a.l.Warn().Msgf(f, v...) }
func (a *logAdapter) Fatalf(f string, v ...any)  { a.l.Error().Msgf(f, v...) }
func (a *logAdapter) Errorf(f string, v ...any)  { a.l.Error().Msgf(f, v...) }
func (a *logAdapter) Debugf(f string, v ...any)  { a.l.Debug().Msgf(f, v...) }
func (a *logAdapter) Tracef(f string, v ...any)  { a.l.Trace().Msgf(f, v...) }
