package worker

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/xygroup/xygroup/worker/ratelimit"
)

// Every stream and bucket is bounded (MaxBytes) and refuses a write that
// would take it over (discard new; a bucket's update that grows its record
// too). A refusal for lack of room is not retried at once: room comes back
// only as records expire or commands are trimmed, so a command that meets a
// full store waits storeFullRetry, spending no attempt, and the store is
// reported (xygroup_store_full, a log line a minute, /readyz) rather than
// logged per command.

// storeFullRetry is how long a command waits after a store refused one of its
// writes for lack of room (a variable for tests: SetStoreFullRetry).
var storeFullRetry = 30 * time.Second

// storeFullFor is how long a store counts as full after its last refusal.
const storeFullFor = time.Minute

// storeFullError: a write refused because store is at its MaxBytes, or the
// server's JetStream storage is full.
type storeFullError struct {
	store string
	err   error
}

func (e *storeFullError) Error() string { return e.store + " is full: " + e.err.Error() }
func (e *storeFullError) Unwrap() error { return e.err }

// storeFull reports a write refused for lack of room: the stream or bucket at
// its MaxBytes, or the server's JetStream storage full.
func storeFull(err error) bool {
	if err == nil {
		return false
	}
	var sf *storeFullError
	if errors.As(err, &sf) {
		return true
	}
	s := err.Error()
	return strings.Contains(s, "maximum bytes exceeded") || strings.Contains(s, "insufficient resources") ||
		strings.Contains(s, "resource limits exceeded")
}

// asStoreFull names store in err when err is a refusal for lack of room.
func asStoreFull(store string, err error) error {
	var sf *storeFullError
	if err == nil || errors.As(err, &sf) || !storeFull(err) {
		return err
	}
	return &storeFullError{store: store, err: err}
}

// fullStoreName is the store a refusal names ("" when it names none).
func fullStoreName(err error) string {
	var sf *storeFullError
	if errors.As(err, &sf) {
		return sf.store
	}
	return ""
}

// storeNames are the stores the worker writes, for their metric series.
var storeNames = []string{StreamCommands, StreamEvents, StreamParked, BucketCommands, BucketMeetings, BucketBreakers,
	BucketParkedShares, ratelimit.Bucket, BucketReplicas}

// bucketReplays is the replay tool's bucket (commands.BucketReplays).
const bucketReplays = "xygroup-replays"

// fullStores keeps which stores refused writes for lack of room lately.
type fullStores struct {
	gauge *prometheus.GaugeVec
	now   func() time.Time

	mu     sync.Mutex
	last   map[string]time.Time // the last refusal, per store
	logged map[string]time.Time // the last log line, per store
}

func newFullStores(m *Metrics, now func() time.Time) *fullStores {
	return &fullStores{gauge: m.StoreFull, now: now, last: map[string]time.Time{}, logged: map[string]time.Time{}}
}

// refused reports whether err is a refusal for lack of room; if so the store
// counts as full for storeFullFor and, at most once a minute per store, log
// says so (what: what could not be done, and what happens instead).
func (f *fullStores) refused(err error, log zerolog.Logger, what string) bool {
	if !storeFull(err) || f == nil {
		return storeFull(err)
	}
	store := fullStoreName(err)
	if store == "" {
		store = "jetstream"
	}
	now := f.now()
	f.mu.Lock()
	f.last[store] = now
	due := now.Sub(f.logged[store]) >= time.Minute
	if due {
		f.logged[store] = now
	}
	f.mu.Unlock()
	f.gauge.WithLabelValues(store).Set(1)
	if due {
		log.Error().Err(err).Str("store", store).Dur("retryIn", storeFullRetry).
			Msg(store + " is full: " + what + " (logged once a minute; see xygroup_store_full and xygroup_store_bytes)")
	}
	return true
}

// sweep clears the stores that refused nothing for storeFullFor.
func (f *fullStores) sweep() {
	now := f.now()
	f.mu.Lock()
	defer f.mu.Unlock()
	for store, at := range f.last {
		if now.Sub(at) >= storeFullFor {
			delete(f.last, store)
			f.gauge.WithLabelValues(store).Set(0)
		}
	}
}

// check is the readiness condition: no store refused a write for lack of
// room within storeFullFor.
func (f *fullStores) check() error {
	f.sweep()
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.last) == 0 {
		return nil
	}
	full := make([]string, 0, len(f.last))
	for store := range f.last {
		full = append(full, store)
	}
	sort.Strings(full)
	return fmt.Errorf("full, refusing writes: %s (commands that need them wait; see the README's sizing table)", strings.Join(full, ", "))
}

// storeStream is the stream that holds store (a bucket's is KV_<bucket>).
func storeStream(store string) string {
	if slices.Contains([]string{StreamCommands, StreamEvents, StreamParked}, store) {
		return store
	}
	return "KV_" + store
}

// watchStores keeps the stores' gauges, at the start and every 30 s.
func (w *Worker) watchStores(ctx context.Context) {
	tick := time.NewTicker(30 * time.Second)
	defer tick.Stop()
	for {
		w.updateStoreGauges(ctx)
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// updateStoreGauges sets xygroup_store_bytes and xygroup_store_max_bytes of
// every store that exists (the replays bucket once a replay made it).
func (w *Worker) updateStoreGauges(ctx context.Context) {
	m := w.opts.metrics
	for _, store := range append(slices.Clip(storeNames), bucketReplays) {
		ictx, cancel := context.WithTimeout(ctx, 5*time.Second)
		s, err := w.js.Stream(ictx, storeStream(store))
		var info *jetstream.StreamInfo
		if err == nil {
			info, err = s.Info(ictx)
		}
		cancel()
		if err != nil {
			continue
		}
		m.StoreBytes.WithLabelValues(store).Set(float64(info.State.Bytes))
		m.StoreMaxBytes.WithLabelValues(store).Set(float64(info.Config.MaxBytes))
	}
	w.full.sweep()
}
