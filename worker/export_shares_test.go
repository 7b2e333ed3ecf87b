package worker

import (
	"context"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// ParkedShare is the enterprise's tally of parked bytes and copies (tests).
func ParkedShare(ctx context.Context, js jetstream.JetStream, enterpriseID string) (bytes, count int64, err error) {
	kv, err := js.KeyValue(ctx, BucketParkedShares)
	if err != nil {
		return 0, 0, err
	}
	r, err := (&parkedShares{kv: kv}).get(ctx, enterpriseID)
	return r.Bytes, r.Count, err
}

// RemoveParkedCopy settles the parked copy at seq as done, as a probe or a
// cancel does, times times at once: deleted, its bytes given back to its
// tenant (tests).
func RemoveParkedCopy(ctx context.Context, w *Worker, seq uint64, times int) error {
	m, err := w.parked.GetMsg(ctx, seq)
	if err != nil {
		return err
	}
	del := parkedDelivery(m.Data, m.Header, 0, fromProbe, m.Sequence, m.Time)
	d := w.p.decoder.decode(del.data, del.header, del.stream, del.seq, time.Time{})
	for range times {
		w.ackCopy(ctx, &probeSettler{stream: w.parked, seq: seq}, d, del, w.log)
	}
	return nil
}

// SetStoreFullRetry sets how long a command waits after a store refused it
// for lack of room, until the returned func restores it (tests that would
// otherwise wait 30 s; set before the worker starts).
func SetStoreFullRetry(d time.Duration) (restore func()) {
	was := storeFullRetry
	storeFullRetry = d
	return func() { storeFullRetry = was }
}
