package worker

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/xygroup/xygroup/worker/jsconfig"
)

// readBucket decodes every value of a bucket, by key; a bucket that does not
// exist yet reads as empty, and a value that does not decode is skipped.
func readBucket[T any](ctx context.Context, js jetstream.JetStream, bucket string) (map[string]T, error) {
	kv, err := js.KeyValue(ctx, bucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	// One watch delivers every current value: a read per key would take a
	// round trip each, with thousands of waiting meetings.
	w, err := kv.WatchAll(ctx, jetstream.IgnoreDeletes())
	if err != nil {
		return nil, err
	}
	defer func() { _ = w.Stop() }()
	out := map[string]T{}
	for {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case e, ok := <-w.Updates():
			if !ok {
				return out, nil
			}
			if e == nil { // every current value was delivered
				return out, nil
			}
			var v T
			if json.Unmarshal(e.Value(), &v) == nil {
				out[e.Key()] = v
			}
		}
	}
}

// watchBucket calls put for every value written to the bucket and del for every
// key deleted, from its current contents on, until ctx ends. It returns once the
// current contents have been delivered.
func watchBucket(ctx context.Context, kv jetstream.KeyValue, put func(key string, value []byte, rev uint64), del func(key string)) error {
	w, err := kv.WatchAll(ctx)
	if err != nil {
		return err
	}
	ready := make(chan struct{})
	go func() {
		defer func() { _ = w.Stop() }()
		initial := true
		for {
			select {
			case <-ctx.Done():
				return
			case e, ok := <-w.Updates():
				if !ok {
					return
				}
				switch {
				case e == nil: // the current contents are in
					if initial {
						initial = false
						close(ready)
					}
				case e.Operation() == jetstream.KeyValuePut:
					put(e.Key(), e.Value(), e.Revision())
				default:
					del(e.Key())
				}
			}
		}
	}()
	select {
	case <-ready:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// errNoKey: casUpdate was asked to change a key that does not exist.
var errNoKey = jetstream.ErrKeyNotFound

// casUpdate changes the JSON value of a key with compare-and-swap: it reads the
// value (initial when the key is absent; with initial nil an absent key is
// errNoKey), lets change edit it, and writes it only if no other writer came in
// between, else reads and tries again. change returns whether to write; its
// error ends the update unwritten. The value as last seen is returned.
func casUpdate[T any](ctx context.Context, kv jetstream.KeyValue, key string, initial *T, change func(*T) (bool, error)) (T, error) {
	v, _, err := casUpdateRev(ctx, kv, key, initial, change)
	return v, err
}

// casUpdateRev is casUpdate that also returns the revision written (0 when
// nothing was written).
func casUpdateRev[T any](ctx context.Context, kv jetstream.KeyValue, key string, initial *T, change func(*T) (bool, error)) (T, uint64, error) {
	var from func(context.Context) (*T, error)
	if initial != nil {
		from = func(context.Context) (*T, error) { return initial, nil }
	}
	return casUpdateFrom(ctx, kv, key, from, change)
}

// casUpdateKnown is casUpdateFrom starting from a value already read (v at
// revision rev; 0: the key had none): one write, and no read, when nothing
// changed the key since. Otherwise it reads and tries again as casUpdateFrom.
func casUpdateKnown[T any](ctx context.Context, kv jetstream.KeyValue, key string, v T, rev uint64, initial func(context.Context) (*T, error), change func(*T) (bool, error)) (T, uint64, error) {
	write, err := change(&v)
	if err != nil || !write {
		return v, 0, err
	}
	written, conflict, err := casWrite(ctx, kv, key, v, rev)
	if !conflict {
		return v, written, err
	}
	return casUpdateFrom(ctx, kv, key, initial, change)
}

// casWrite writes v over revision rev (0: creates the key), and reports a
// conflict (another writer came in between) apart from other errors.
func casWrite[T any](ctx context.Context, kv jetstream.KeyValue, key string, v T, rev uint64) (written uint64, conflict bool, err error) {
	b, err := marshalRecord(v)
	if err != nil {
		return 0, false, err
	}
	if rev == 0 {
		written, err = kv.Create(ctx, key, b)
	} else {
		written, err = kv.Update(ctx, key, b, rev)
	}
	if errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		return 0, true, err
	}
	return written, false, asStoreFull(kv.Bucket(), err)
}

// casUpdateFrom is casUpdateRev whose initial value is computed only when the
// key has none (it may cost a read of its own).
func casUpdateFrom[T any](ctx context.Context, kv jetstream.KeyValue, key string, initial func(context.Context) (*T, error), change func(*T) (bool, error)) (T, uint64, error) {
	for {
		var v T
		var rev uint64
		e, err := kv.Get(ctx, key)
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound) && initial != nil:
			iv, ierr := initial(ctx)
			if ierr != nil {
				return v, 0, ierr
			}
			v = *iv
		case err != nil:
			return v, 0, err
		default:
			rev = e.Revision()
			if err := json.Unmarshal(e.Value(), &v); err != nil {
				return v, 0, err
			}
		}
		write, err := change(&v)
		if err != nil || !write {
			return v, 0, err
		}
		written, conflict, err := casWrite(ctx, kv, key, v, rev)
		if !conflict {
			return v, written, err
		}
		if ctx.Err() != nil {
			return v, 0, ctx.Err()
		}
	}
}

// ensureBucket creates the bucket when missing, and opens it otherwise. An
// existing bucket is used as it is: its differences from cfg are logged, and
// fewer replicas than cfg asks for refuse it (jsconfig.MisconfiguredError).
func ensureBucket(ctx context.Context, js jetstream.JetStream, cfg jetstream.KeyValueConfig, log zerolog.Logger) (jetstream.KeyValue, error) {
	kv, diffs, err := jsconfig.EnsureBucket(ctx, js, cfg)
	if err != nil {
		return nil, err
	}
	for _, d := range diffs {
		log.Warn().Str("bucket", cfg.Bucket).Str("difference", d).Msg("existing bucket differs from the default; left as configured")
	}
	return kv, nil
}

// reopenBucket is called after a write to a bucket failed: when NATS no longer
// has the bucket (an in-memory bucket after its server restarted, or a store
// that was lost), it is created again with cfg and the fact logged. It returns
// the bucket, or the lookup's error when NATS is unreachable.
func reopenBucket(ctx context.Context, js jetstream.JetStream, cfg jetstream.KeyValueConfig, log zerolog.Logger) (jetstream.KeyValue, error) {
	kv, err := js.KeyValue(ctx, cfg.Bucket)
	if !errors.Is(err, jetstream.ErrBucketNotFound) {
		return kv, err
	}
	kv, err = ensureBucket(ctx, js, cfg, log)
	if err == nil {
		log.Warn().Str("bucket", cfg.Bucket).Msg("bucket was missing (its NATS server restarted or lost its store); created it again")
	}
	return kv, err
}

// marshalRecord encodes a record without HTML escaping, so that an event stored
// in it is kept byte for byte (json.Marshal would turn '<' into "\u003c" and
// grow a command full of them sixfold).
func marshalRecord(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}
