package worker

import (
	"context"
	neturl "net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
)

// A NATS server cut off from the rest of its cluster keeps its clients
// connected: nats.go sees nothing wrong, and a replica on it can neither write
// a record nor settle a command until the network heals, while the commands it
// holds wait for their ack wait to run out before the other replicas get them.
// So each replica watches its own JetStream writes (its last heartbeat written
// again once a second, which needs a quorum of the bucket's servers): when they have failed for
// a while, it tries the same write through each other server of its list, and
// moves its connection (a forced reconnect) when one of them succeeds. A
// cluster without a quorum anywhere (an election, most servers down) fails
// that test everywhere: the replica stays where it is.
const (
	// writeLost: no write confirmed for this long, and at least two failed.
	writeLost = 3 * time.Second
	// writeTimeout bounds the heartbeat's write: a committed write to a
	// replicated bucket in memory takes milliseconds.
	writeTimeout = 1500 * time.Millisecond
	// moveBackoff: the least time between two tests of the other servers,
	// doubling up to moveBackoffMax while they fail too.
	moveBackoff    = 2 * time.Second
	moveBackoffMax = 30 * time.Second
)

// serverWatch decides, from the outcome of each heartbeat write, when to try
// another NATS server.
type serverWatch struct {
	nc  *nats.Conn
	log zerolog.Logger
	// write is the heartbeat write through a JetStream context (this
	// replica's or a probe connection's).
	write func(ctx context.Context, js jetstream.JetStream) error
	// moved counts the forced reconnects (xygroup_nats_server_moves_total).
	moved func()

	mu        sync.Mutex
	lastOK    time.Time
	failures  int
	notBefore time.Time // no test of the other servers before
	backoff   time.Duration
	testing   atomic.Bool
}

func newServerWatch(nc *nats.Conn, log zerolog.Logger, write func(context.Context, jetstream.JetStream) error, moved func()) *serverWatch {
	return &serverWatch{nc: nc, log: log, write: write, moved: moved, lastOK: time.Now(), backoff: moveBackoff}
}

// run writes through this replica's connection every second until ctx ends.
func (s *serverWatch) run(ctx context.Context, js jetstream.JetStream) {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		wctx, cancel := context.WithTimeout(ctx, writeTimeout)
		err := s.write(wctx, js)
		cancel()
		if ctx.Err() != nil {
			return
		}
		s.wrote(ctx, err)
	}
}

// wrote records a heartbeat write's outcome; after writeLost of failures it
// tests the other servers in the background.
func (s *serverWatch) wrote(ctx context.Context, err error) {
	now := time.Now()
	s.mu.Lock()
	if err == nil {
		s.lastOK, s.failures, s.backoff = now, 0, moveBackoff
		s.mu.Unlock()
		return
	}
	s.failures++
	lost := s.failures >= 2 && now.Sub(s.lastOK) >= writeLost && !now.Before(s.notBefore)
	since := now.Sub(s.lastOK)
	s.mu.Unlock()
	if !lost || s.nc.Status() != nats.CONNECTED || len(s.nc.Servers()) < 2 || !s.testing.CompareAndSwap(false, true) {
		return
	}
	s.log.Warn().Str("server", s.nc.ConnectedServerName()).Dur("failingFor", since.Round(100*time.Millisecond)).AnErr("cause", err).
		Msg("JetStream writes failing through this NATS server; trying the others")
	go func() {
		defer s.testing.Store(false)
		s.tryOthers(ctx, since, err)
	}()
}

// tryOthers writes through each other server in turn and moves the
// connection once one of them took the write.
func (s *serverWatch) tryOthers(ctx context.Context, since time.Duration, cause error) {
	current := s.nc.ConnectedUrl()
	from := s.nc.ConnectedServerName()
	for _, url := range s.nc.Servers() {
		if url == current || ctx.Err() != nil {
			continue
		}
		name, err := s.probe(ctx, url)
		if err != nil {
			s.log.Debug().Err(err).Str("url", redactedURL(url)).Msg("NATS server test: write failed")
			continue
		}
		s.log.Warn().Str("server", from).Str("reachable", name).Dur("failingFor", since.Round(100*time.Millisecond)).
			AnErr("cause", cause).Msg("NATS server cannot write to JetStream while another can: moving to another server")
		if err := s.nc.ForceReconnect(); err != nil {
			s.log.Warn().Err(err).Msg("NATS reconnect")
			break
		}
		if s.moved != nil {
			s.moved()
		}
		s.mu.Lock()
		// The writes through the new server decide from now on.
		s.lastOK, s.failures, s.notBefore = time.Now(), 0, time.Now().Add(s.backoff)
		s.mu.Unlock()
		return
	}
	s.mu.Lock()
	s.notBefore = time.Now().Add(s.backoff)
	s.backoff = min(2*s.backoff, moveBackoffMax)
	s.mu.Unlock()
	s.log.Info().Str("server", from).Dur("failingFor", since.Round(100*time.Millisecond)).AnErr("cause", cause).
		Msg("JetStream writes failing through every NATS server tried; staying")
}

// probe connects to url alone, with this replica's settings, and writes the
// heartbeat through it. It returns the server's name.
func (s *serverWatch) probe(ctx context.Context, url string) (string, error) {
	o := s.nc.Opts
	o.Url, o.Servers = url, nil
	o.NoRandomize, o.AllowReconnect, o.RetryOnFailedConnect = true, false, false
	o.Timeout = writeTimeout
	o.Name += " (server test)"
	o.ConnectedCB, o.DisconnectedCB, o.DisconnectedErrCB, o.ReconnectedCB, o.ClosedCB = nil, nil, nil, nil, nil
	o.DiscoveredServersCB, o.AsyncErrorCB, o.LameDuckModeHandler = nil, nil, nil
	nc, err := o.Connect()
	if err != nil {
		return "", err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return "", err
	}
	wctx, cancel := context.WithTimeout(ctx, 2*writeTimeout)
	defer cancel()
	if err := s.write(wctx, js); err != nil {
		return "", err
	}
	return nc.ConnectedServerName(), nil
}

// redactedURL is a server URL without its user information.
func redactedURL(raw string) string {
	u, err := neturl.Parse(raw)
	if err != nil {
		return "[unparseable url]"
	}
	u.User = nil
	return u.String()
}
