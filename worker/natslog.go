package worker

import (
	"errors"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"
)

// NATSLogging returns the connection options that send what the NATS client
// reports asynchronously (errors such as a slow consumer, disconnects,
// reconnects, the connection closing, a server entering lame duck mode) to log,
// as structured lines. Without them the client prints plain text to stderr,
// amid the JSON log.
//
// A slow consumer is a subscription whose client-side buffer was full: the
// client dropped messages for it. The line names the subscription's subject and
// kind and how many messages it has dropped so far.
func NATSLogging(log zerolog.Logger) []nats.Option {
	return []nats.Option{
		nats.ErrorHandler(func(nc *nats.Conn, sub *nats.Subscription, err error) {
			ev := log.Error()
			if errors.Is(err, nats.ErrSlowConsumer) {
				ev = log.Warn()
			}
			ev = ev.Err(err).Str("connection", nc.Opts.Name)
			if sub != nil {
				ev = ev.Str("subject", sub.Subject).Str("subscription", subscriptionKind(sub.Type()))
				if d, derr := sub.Dropped(); derr == nil {
					ev = ev.Int("dropped", d)
				}
				if n, b, perr := sub.PendingLimits(); perr == nil {
					ev = ev.Int("pendingMsgsLimit", n).Int("pendingBytesLimit", b)
				}
			}
			ev.Msg("NATS client error")
		}),
		nats.DisconnectErrHandler(func(nc *nats.Conn, err error) {
			if nc.IsClosed() {
				return // closed on purpose (Close, the end of a Drain): no reconnect follows; the closed handler reports it
			}
			ev := log.Warn().Str("connection", nc.Opts.Name)
			if err != nil {
				ev = ev.Err(err)
			}
			ev.Msg("NATS disconnected; reconnecting")
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			log.Info().Str("connection", nc.Opts.Name).Str("server", nc.ConnectedUrlRedacted()).
				Uint64("reconnects", nc.Stats().Reconnects).Msg("NATS reconnected")
		}),
		nats.ClosedHandler(func(nc *nats.Conn) {
			ev := log.Info().Str("connection", nc.Opts.Name)
			if err := nc.LastError(); err != nil {
				ev = log.Warn().Str("connection", nc.Opts.Name).Err(err)
			}
			ev.Msg("NATS connection closed")
		}),
		nats.LameDuckModeHandler(func(nc *nats.Conn) {
			log.Warn().Str("connection", nc.Opts.Name).Str("server", nc.ConnectedUrlRedacted()).
				Msg("NATS server entering lame duck mode; the client will move to another")
		}),
	}
}

func subscriptionKind(t nats.SubscriptionType) string {
	switch t {
	case nats.AsyncSubscription:
		return "async"
	case nats.SyncSubscription:
		return "sync"
	case nats.ChanSubscription:
		return "chan"
	case nats.NilSubscription:
		return "nil"
	default:
		return "pull"
	}
}
