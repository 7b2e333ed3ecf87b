package worker

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
)

// releaser lets out the parked commands of released meetings and holds. Every
// replica helps, once per meeting at a time, each command with a slot of the
// letting-out share; the commands themselves go through the replica's
// handling of a parked message (handle).
type releaser struct {
	js       jetstream.JetStream
	parked   jetstream.Stream
	meetings jetstream.KeyValue
	view     *meetingView
	slots    *slots
	log      zerolog.Logger
	handle   func(msg jetstream.Msg, token string)
	running  sync.Map // meetings this replica lets out now
}

// start makes this replica help let out a released meeting's parked commands.
func (r *releaser) start(ctx context.Context, token string) {
	if _, running := r.running.LoadOrStore(token, true); running {
		return
	}
	go func() {
		defer r.running.Delete(token)
		defer func() {
			if p := recover(); p != nil {
				// The prober starts letting out again; what it had fetched returns after AckWait.
				r.log.Error().Interface("panic", p).Str("meeting", token).Msg("letting out panicked")
			}
		}()
		r.letOut(ctx, token)
	}()
}

func releaseConsumer(token string) jetstream.ConsumerConfig {
	return parkedConsumer(releasePrefix+token, "xygroup: parked commands of a meeting that answered", token, 256)
}

// parkedConsumer reads one token's parked commands (a released meeting's or
// hold's, or a lane's), each until it is settled, and is removed by the server
// once no replica has read it for ten minutes.
func parkedConsumer(durable, description, token string, maxAckPending int) jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:           durable,
		Description:       description,
		FilterSubject:     parkedSubject(token),
		AckPolicy:         jetstream.AckExplicitPolicy,
		AckWait:           30 * time.Second,
		MaxDeliver:        -1,
		MaxAckPending:     maxAckPending,
		DeliverPolicy:     jetstream.DeliverAllPolicy,
		InactiveThreshold: 10 * time.Minute,
	}
}

// letOut pulls the meeting's parked commands through the pipeline, with the
// replica's shared concurrency, until none is left; the last one out forgets the
// meeting and deletes the consumer.
func (r *releaser) letOut(ctx context.Context, token string) {
	cfg := releaseConsumer(token)
	cons, err := r.js.CreateConsumer(ctx, StreamParked, cfg)
	if errors.Is(err, jetstream.ErrConsumerExists) {
		cons, err = r.js.Consumer(ctx, StreamParked, cfg.Durable)
	}
	if err != nil {
		if ctx.Err() == nil {
			r.log.Warn().Err(err).Str("meeting", token).Msg("release consumer")
		}
		return
	}
	for ctx.Err() == nil {
		batch, err := cons.Fetch(cap(r.slots.letOut), jetstream.FetchMaxWait(time.Second))
		if err != nil {
			return // deleted by the replica that finished it, or NATS is away: the prober starts again
		}
		n := 0
		for msg := range batch.Messages() {
			n++
			if !r.slots.takeLetOut(ctx) {
				_ = msg.Nak()
				continue
			}
			go func() {
				defer r.slots.putLetOut()
				r.handle(msg, token)
			}()
		}
		if n > 0 {
			continue
		}
		info, err := cons.Info(ctx)
		if err != nil {
			return
		}
		if info.NumPending == 0 && info.NumAckPending == 0 {
			// The consumer's word alone does not say its commands are out: a
			// clustered consumer without a leader yet (just created, or while
			// a node rejoins) is answered for by a replica with an empty
			// state. Only the stream says it: a command leaves it when it is
			// settled. While it still holds some, the consumer is created
			// anew (runBackground starts letting out again) and reads them all.
			left, err := r.parkedLeft(ctx, token)
			if err != nil {
				return
			}
			if !left {
				// At the revision seen: a command parked since made the
				// meeting wait again (a write), and keeps its record.
				if e, ok := r.view.get(token); ok {
					_, _ = applyMeetingAt(ctx, r.meetings, token, &e.rec, e.rev, meetingChange{event: evLetOutDone, now: time.Now()})
				}
			}
			_ = r.js.DeleteConsumer(ctx, StreamParked, cfg.Durable)
			return
		}
	}
}

// parkedLeft reports whether the parked stream still holds a command of the
// meeting, as its leader knows it.
func (r *releaser) parkedLeft(ctx context.Context, token string) (bool, error) {
	_, err := r.parked.GetLastMsgForSubject(ctx, parkedSubject(token))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("parked commands of %s: %w", token, err)
	}
	return true, nil
}

// handleReleased runs one parked command of a released meeting or hold (token)
// through the pipeline.
func (w *Worker) handleReleased(msg jetstream.Msg, token string) {
	w.handleParked(msg, fromReleased, w.log.With().Str("meeting", token).Logger(), nil, func(v verdict, d *Decoded) verdict {
		meetingTok := token // a message that is no command stays with the meeting it was parked under
		if d.Cmd != nil {
			meetingTok = meetingToken(d.EnterpriseID, d.Cmd.MeetingRoomNumber)
		}
		if v.waiting && msg.Subject() != parkedSubject(meetingTok) {
			v = w.parker.toMeeting(v) // released from a tenant's hold: now it waits for its meeting
		}
		if v.ends() {
			if e, ok := w.view.get(meetingTok); ok && !e.rec.ReleasedAt.IsZero() {
				w.opts.metrics.ReleaseLatency.Observe(w.opts.now().Sub(e.rec.ReleasedAt).Seconds())
			}
		}
		return v
	})
}

// handleParked runs one message of the parked stream (a lane's command, or a
// released meeting's or hold's) through the pipeline, kept alive until it is
// settled: prepare completes its delivery, decided may change the verdict
// before it is applied. Whatever the message holds, it ends here or goes back:
// one that is no command ends as failed.invalid_command, and a panic returns it
// for a later try instead of ending the process.
func (w *Worker) handleParked(msg jetstream.Msg, kind deliveryKind, log zerolog.Logger, prepare func(*delivery), decided func(verdict, *Decoded) verdict) {
	defer func() {
		if r := recover(); r != nil {
			log.Error().Interface("panic", r).Msg("parked command's handler panicked; the command stays parked and will be retried")
			_ = msg.NakWithDelay(5 * time.Second)
		}
	}()
	meta, err := msg.Metadata()
	if err != nil {
		_ = msg.Term()
		return
	}
	del := parkedDelivery(msg.Data(), msg.Headers(), int(meta.NumDelivered), kind, meta.Sequence.Stream, meta.Timestamp)
	if prepare != nil {
		prepare(del)
	}
	stop := sync.OnceFunc(keepAlive(msg, 10*time.Second))
	defer stop() // until settled, as for the shared consumer, and after a panic
	ctx, span := w.startCommand(w.work, del)
	defer span.End()
	v, d := w.p.process(ctx, del, &log)
	v = decided(v, d)
	w.apply(ctx, v, d, del, &msgSettler{msg: msg}, log)
}
