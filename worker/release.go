package worker

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// startLettingOut makes this replica help let out a released meeting's parked commands
// (once per meeting at a time).
func (w *Worker) startLettingOut(ctx context.Context, token string) {
	if _, running := w.serving.LoadOrStore(token, true); running {
		return
	}
	go func() {
		defer w.serving.Delete(token)
		defer func() {
			if r := recover(); r != nil {
				// The prober starts letting out again; what it had fetched returns after AckWait.
				w.log.Error().Interface("panic", r).Str("meeting", token).Msg("letting out panicked")
			}
		}()
		w.letOut(ctx, token)
	}()
}

func releaseConsumer(token string) jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:           releasePrefix + token,
		Description:       "xygroup: parked commands of a meeting that answered",
		FilterSubject:     parkedSubject(token),
		AckPolicy:         jetstream.AckExplicitPolicy,
		AckWait:           30 * time.Second,
		MaxDeliver:        -1,
		MaxAckPending:     256,
		DeliverPolicy:     jetstream.DeliverAllPolicy,
		InactiveThreshold: 10 * time.Minute,
	}
}

// letOut pulls the meeting's parked commands through the pipeline, with the
// replica's shared concurrency, until none is left; the last one out forgets the
// meeting and deletes the consumer.
func (w *Worker) letOut(ctx context.Context, token string) {
	cfg := releaseConsumer(token)
	cons, err := w.js.CreateConsumer(ctx, StreamParked, cfg)
	if errors.Is(err, jetstream.ErrConsumerExists) {
		cons, err = w.js.Consumer(ctx, StreamParked, cfg.Durable)
	}
	if err != nil {
		if ctx.Err() == nil {
			w.log.Warn().Err(err).Str("meeting", token).Msg("release consumer")
		}
		return
	}
	for ctx.Err() == nil {
		batch, err := cons.Fetch(cap(w.letOutSlots), jetstream.FetchMaxWait(time.Second))
		if err != nil {
			return // deleted by the replica that finished it, or NATS is away: the prober starts again
		}
		n := 0
		for msg := range batch.Messages() {
			n++
			if !w.takeLetOut(ctx) {
				_ = msg.Nak()
				continue
			}
			go func() {
				defer w.putLetOut()
				w.handleReleased(msg, token)
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
			if e, ok := w.view.get(token); ok && e.rec.State == meetingReleased {
				_ = w.meetings.Delete(ctx, token, jetstream.LastRevision(e.rev))
			}
			_ = w.js.DeleteConsumer(ctx, StreamParked, cfg.Durable)
			return
		}
	}
}

// takeBackground takes a slot for background work (a probe, a released
// command): one of the background share, then one of the replica's slots.
func (w *Worker) takeBackground(ctx context.Context) bool {
	select {
	case w.background <- struct{}{}:
	case <-ctx.Done():
		return false
	}
	select {
	case w.slots <- struct{}{}:
		return true
	case <-ctx.Done():
		<-w.background
		return false
	}
}

func (w *Worker) putBackground() {
	<-w.slots
	<-w.background
}

// takeLetOut takes a slot for a released command: one of the letting-out
// share of the background slots, then a background slot.
func (w *Worker) takeLetOut(ctx context.Context) bool {
	select {
	case w.letOutSlots <- struct{}{}:
	case <-ctx.Done():
		return false
	}
	if !w.takeBackground(ctx) {
		<-w.letOutSlots
		return false
	}
	return true
}

func (w *Worker) putLetOut() {
	w.putBackground()
	<-w.letOutSlots
}

// handleReleased runs one parked command of a released meeting or hold (token)
// through the pipeline. Whatever the parked message holds, it ends here or goes
// back: a message that is no command ends as failed.invalid_command, and a panic
// returns the message for a later try instead of ending the process.
func (w *Worker) handleReleased(msg jetstream.Msg, token string) {
	ctx := w.work
	log := w.log.With().Str("meeting", token).Logger()
	defer func() {
		if r := recover(); r != nil {
			log.Error().Interface("panic", r).Msg("released command's handler panicked; the command stays parked and will be retried")
			_ = msg.NakWithDelay(5 * time.Second)
		}
	}()
	meta, err := msg.Metadata()
	if err != nil {
		_ = msg.Term()
		return
	}
	del := parkedDelivery(msg.Data(), msg.Headers(), int(meta.NumDelivered), fromReleased, meta.Sequence.Stream, meta.Timestamp)
	stop := sync.OnceFunc(keepAlive(msg, 10*time.Second))
	defer stop() // until settled, as for the shared consumer, and after a panic
	ctx, span := w.startCommand(ctx, del)
	defer span.End()
	v, d := w.p.process(ctx, del, &log)
	meetingTok := token // a message that is no command stays with the meeting it was parked under
	if d.Cmd != nil {
		meetingTok = meetingToken(d.EnterpriseID, d.Cmd.MeetingRoomNumber)
	}
	if v.waiting && msg.Subject() != parkedSubject(meetingTok) {
		v = w.toMeeting(v) // released from a tenant's hold: now it waits for its meeting
	}
	if v.event != nil {
		if e, ok := w.view.get(meetingTok); ok && !e.rec.ReleasedAt.IsZero() {
			w.opts.metrics.ReleaseLatency.Observe(w.opts.now().Sub(e.rec.ReleasedAt).Seconds())
		}
	}
	w.apply(ctx, v, d, del, &msgSettler{msg: msg}, log)
}
