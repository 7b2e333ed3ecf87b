package worker

import (
	"context"
	"encoding/json"
	"errors"

	"github.com/nats-io/nats.go/jetstream"
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
	keys, err := kv.ListKeys(ctx)
	if err != nil {
		return nil, err
	}
	out := map[string]T{}
	for k := range keys.Keys() {
		e, err := kv.Get(ctx, k)
		if err != nil {
			continue
		}
		var v T
		if json.Unmarshal(e.Value(), &v) == nil {
			out[k] = v
		}
	}
	return out, nil
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
