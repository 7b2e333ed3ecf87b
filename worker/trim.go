package worker

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
)

// The commands stream keeps commands after they are done, as the source for
// replay, and refuses new commands when it is full (DiscardNew): a command it
// cannot hold is refused to its publisher, never stored and dropped later. So
// that done commands do not fill it, every replica trims its oldest history
// once it holds trimAbove of its MaxBytes, down to trimTo, and only below the
// shared consumer's ack floor: never a command that is not acknowledged (not
// done, not parked). Purging up to a sequence is idempotent: replicas doing it
// at once remove what one would.
const (
	trimAbove = 0.85
	trimTo    = 0.70
	trimEvery = 2 * time.Second
)

// floorAt is the shared consumer's ack floor as read at a time.
type floorAt struct {
	at    time.Time
	floor uint64
}

// historyTrimmer trims the commands stream's acknowledged history.
type historyTrimmer struct {
	js  jetstream.JetStream
	lag time.Duration
	now func() time.Time
	log zerolog.Logger

	mu         sync.Mutex
	floors     []floorAt // recent floors, oldest first
	lastRefuse time.Time // when a refused purge was last logged
}

// run trims every trimEvery until ctx ends.
func (t *historyTrimmer) run(ctx context.Context) {
	tick := time.NewTicker(trimEvery)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		tctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		if _, err := t.trim(tctx); err != nil && ctx.Err() == nil {
			t.log.Debug().Err(err).Msg("commands history not trimmed")
		}
		cancel()
	}
}

// trim purges the oldest acknowledged commands when the stream nears its
// MaxBytes, and returns how many it purged. The bound is the ack floor as read
// at least lag ago: a cancel reads the floor, then scans the parked stream,
// then the commands stream above the floor it read, and a command acknowledged
// (parked) between its two scans must still be in the commands stream then.
func (t *historyTrimmer) trim(ctx context.Context) (uint64, error) {
	cons, err := t.js.Consumer(ctx, StreamCommands, ConsumerWorkers)
	if err != nil {
		return 0, err
	}
	ci, err := cons.Info(ctx)
	if err != nil {
		return 0, err
	}
	now := t.now()
	bound := t.note(now, ci.AckFloor.Stream)
	s, err := t.js.Stream(ctx, StreamCommands)
	if err != nil {
		return 0, err
	}
	st, limit := s.CachedInfo().State, s.CachedInfo().Config.MaxBytes
	if limit <= 0 || float64(st.Bytes) < trimAbove*float64(limit) || st.Msgs == 0 || bound < st.FirstSeq {
		return 0, nil
	}
	// Enough of the oldest to go down to trimTo, by their average size.
	avg := max(st.Bytes/st.Msgs, 1)
	drop := (st.Bytes - uint64(trimTo*float64(limit)) + avg - 1) / avg
	upTo := min(st.FirstSeq+drop, bound+1) // purged: below upTo
	// A request the permissions refuse goes unanswered.
	purgeCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := s.Purge(purgeCtx, jetstream.WithPurgeSequence(upTo)); err != nil {
		t.refused(err)
		return 0, err
	}
	purged := upTo - st.FirstSeq
	t.log.Info().Uint64("purged", purged).Uint64("below", upTo).Uint64("bytes", st.Bytes).Int64("maxBytes", limit).
		Msg("commands stream near its limit: oldest done commands removed from the replay history")
	return purged, nil
}

// note keeps the floor read now and returns the newest floor read at least lag
// ago (0: none yet).
func (t *historyTrimmer) note(now time.Time, floor uint64) uint64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.floors = append(t.floors, floorAt{at: now, floor: floor})
	var bound uint64
	i := 0
	for ; i < len(t.floors) && !now.Before(t.floors[i].at.Add(t.lag)); i++ {
		bound = t.floors[i].floor
	}
	if i > 0 {
		t.floors = append(t.floors[:0], t.floors[i-1:]...) // keep the bound: it holds until a newer one is old enough
	}
	return bound
}

// refused logs, at most every 10 minutes, a purge the server or the
// permissions refused: the stream then fills with done commands and refuses
// new ones.
func (t *historyTrimmer) refused(err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.now().Sub(t.lastRefuse) < 10*time.Minute {
		return
	}
	t.lastRefuse = t.now()
	msg := "could not trim the commands stream's history; once full it refuses new commands"
	var apiErr *jetstream.APIError
	if !errors.As(err, &apiErr) && (errors.Is(err, context.DeadlineExceeded) || errors.Is(t.js.Conn().LastError(), nats.ErrPermissionViolation)) {
		msg += ": allow the worker user to publish $JS.API.STREAM.PURGE." + StreamCommands + " (deployments/nats/accounts.conf)"
	}
	t.log.Warn().Err(err).Msg(msg)
}
