package contract

import (
	"context"
	"encoding/json"
	"errors"
	"iter"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// ReadOptions say what a Reader reads and how.
type ReadOptions struct {
	// Stream is the stream read: StreamEvents when empty.
	Stream string
	// Subjects filter the stream: all of its subjects when empty.
	Subjects []string
	// StartSeq, else StartTime, is where reading starts: at the stream's
	// first message when neither is set.
	StartSeq  uint64
	StartTime time.Time
	// Follow keeps reading new messages until the context ends. Without it,
	// reading stops once the messages stored when it started were read.
	Follow bool
	// Batch is how many messages one fetch asks for (1 when 0). A larger
	// batch reads a long stream in fewer round trips, but its fetch waits for
	// the batch to fill, up to Wait, before reading stops.
	Batch int
	// Wait is the longest one fetch waits (1s when 0).
	Wait time.Duration
}

// Reader reads a stream in order through an ordered consumer: ephemeral, so a
// reader leaves nothing behind on the server and needs no durable consumer of
// its own.
type Reader struct {
	cons jetstream.Consumer
	opts ReadOptions
}

// NewReader creates the reader's consumer. Its error is the server's: no
// stream yet (no worker has started), or no permission.
func NewReader(ctx context.Context, js jetstream.JetStream, o ReadOptions) (*Reader, error) {
	if o.Stream == "" {
		o.Stream = StreamEvents
	}
	o.Batch = max(o.Batch, 1)
	if o.Wait <= 0 {
		o.Wait = time.Second
	}
	cfg := jetstream.OrderedConsumerConfig{FilterSubjects: o.Subjects}
	switch {
	case o.StartSeq > 0:
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, o.StartSeq
	case !o.StartTime.IsZero():
		start := o.StartTime
		cfg.DeliverPolicy, cfg.OptStartTime = jetstream.DeliverByStartTimePolicy, &start
	}
	cons, err := js.OrderedConsumer(ctx, o.Stream, cfg)
	if err != nil {
		return nil, err
	}
	return &Reader{cons: cons, opts: o}, nil
}

// Msg is a message read.
type Msg struct {
	jetstream.Msg
}

// Meta is the message's place in its stream and the time it was stored (nil
// when the message has none).
func (m Msg) Meta() *jetstream.MsgMetadata {
	meta, err := m.Msg.Metadata()
	if err != nil {
		return nil
	}
	return meta
}

// Event decodes the message as an event. A field of another type stays
// empty, and the error says which was the first.
func (m Msg) Event() (Event, error) {
	var e Event
	err := json.Unmarshal(m.Data(), &e)
	return e, err
}

// Identity decodes the command or event's identity: empty fields when it is
// not a JSON object, or a field is not a string.
func (m Msg) Identity() Identity { return IdentityOf(m.Data()) }

// IdentityOf reads the identity of a command or an event from its body.
func IdentityOf(data []byte) Identity {
	var id Identity
	_ = json.Unmarshal(data, &id) // a field of another type stays empty; the others are read
	return id
}

// Messages yields the messages in stream order, until the loop stops, the
// context ends (its error is yielded last), or, without Follow, every message
// stored when reading started was read. A fetch that ends without a message
// is not an error; other errors are yielded, and reading goes on if the loop
// does.
func (r *Reader) Messages(ctx context.Context) iter.Seq2[Msg, error] {
	return func(yield func(Msg, error) bool) {
		for {
			if err := ctx.Err(); err != nil {
				yield(Msg{}, err)
				return
			}
			if !r.opts.Follow {
				info, err := r.cons.Info(ctx)
				if err != nil {
					if ctx.Err() == nil {
						yield(Msg{}, err)
					} else {
						yield(Msg{}, ctx.Err())
					}
					return
				}
				if info.NumPending == 0 {
					return
				}
			}
			// A fetch does not outlast the context.
			wait := r.opts.Wait
			if d, ok := ctx.Deadline(); ok {
				wait = max(min(wait, time.Until(d)), time.Millisecond)
			}
			if r.opts.Batch == 1 {
				m, err := r.cons.Next(jetstream.FetchMaxWait(wait))
				switch {
				case noMessage(err):
				case err != nil:
					if !yield(Msg{}, err) {
						return
					}
				default:
					if !yield(Msg{m}, nil) {
						return
					}
				}
				continue
			}
			batch, err := r.cons.Fetch(r.opts.Batch, jetstream.FetchMaxWait(wait))
			if err != nil {
				if !yield(Msg{}, err) {
					return
				}
				continue
			}
			for m := range batch.Messages() {
				if !yield(Msg{m}, nil) {
					return
				}
			}
			if err := batch.Error(); err != nil && !noMessage(err) {
				if !yield(Msg{}, err) {
					return
				}
			}
		}
	}
}

// noMessage: the fetch ended without a message, which is no error.
func noMessage(err error) bool {
	return errors.Is(err, nats.ErrTimeout) || errors.Is(err, jetstream.ErrNoMessages)
}
