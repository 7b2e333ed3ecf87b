// Package jsconfig creates the JetStream key-value buckets the worker needs and
// checks existing ones against the configuration the worker would create.
package jsconfig

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
)

// MisconfiguredError: an existing stream or bucket cannot be used as it is
// configured. Retrying does not help; an operator has to change it.
type MisconfiguredError struct{ Msg string }

func (e *MisconfiguredError) Error() string { return e.Msg }

// IsMisconfigured reports whether err (or an error it wraps) is a MisconfiguredError.
func IsMisconfigured(err error) bool {
	var m *MisconfiguredError
	return errors.As(err, &m)
}

// TooFewReplicas is the refusal of a stream or bucket that has fewer replicas
// than --stream-replicas asks for: what it holds would live on fewer nodes than
// the operator expects.
// stream is the JetStream stream that holds it (KV_<bucket> for a bucket).
func TooFewReplicas(kind, name, stream string, have, want int) error {
	return &MisconfiguredError{Msg: fmt.Sprintf("%s %s has %d replica(s) but --stream-replicas (XYGROUP_STREAM_REPLICAS) asks for %d: "+
		"raise them (nats stream edit %s --replicas %d) or lower --stream-replicas", kind, name, have, want, stream, want)}
}

// EnsureBucket creates the bucket when it is missing and opens it otherwise.
// An existing bucket is never changed: how it differs from want is returned for
// the log, and a bucket with fewer replicas than want is refused
// (MisconfiguredError). Replicas starting together may race to create it:
// "already exists" opens and compares.
func EnsureBucket(ctx context.Context, js jetstream.JetStream, want jetstream.KeyValueConfig) (jetstream.KeyValue, []string, error) {
	kv, err := js.KeyValue(ctx, want.Bucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		kv, err = js.CreateKeyValue(ctx, want)
		if err == nil {
			return kv, nil, nil
		}
		if errors.Is(err, jetstream.ErrBucketExists) || errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			kv, err = js.KeyValue(ctx, want.Bucket)
		}
	}
	if err != nil {
		return nil, nil, fmt.Errorf("bucket %s: %w", want.Bucket, err)
	}
	st, err := kv.Status(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("bucket %s: status: %w", want.Bucket, err)
	}
	diffs, err := CompareBucket(st.Config(), want)
	if err != nil {
		return nil, nil, err
	}
	return kv, diffs, nil
}

// CompareBucket lists how an existing bucket differs from the one the worker
// would create; fewer replicas than want is an error.
func CompareBucket(have, want jetstream.KeyValueConfig) ([]string, error) {
	replicas := func(n int) int { return max(n, 1) }
	if replicas(have.Replicas) < replicas(want.Replicas) {
		return nil, TooFewReplicas("bucket", want.Bucket, "KV_"+want.Bucket, replicas(have.Replicas), replicas(want.Replicas))
	}
	var diffs []string
	if replicas(have.Replicas) != replicas(want.Replicas) {
		diffs = append(diffs, fmt.Sprintf("replicas %d (expected %d)", replicas(have.Replicas), replicas(want.Replicas)))
	}
	if have.Storage != want.Storage {
		diffs = append(diffs, fmt.Sprintf("storage %s (expected %s)", have.Storage, want.Storage))
	}
	history := func(n uint8) uint8 { return max(n, 1) }
	if history(have.History) != history(want.History) {
		diffs = append(diffs, fmt.Sprintf("history %d (expected %d)", history(have.History), history(want.History)))
	}
	if have.TTL != want.TTL {
		diffs = append(diffs, fmt.Sprintf("ttl %s (expected %s)", have.TTL, want.TTL))
	}
	switch {
	case want.MaxBytes > 0 && have.MaxBytes <= 0:
		diffs = append(diffs, fmt.Sprintf("max bytes unlimited (expected %d: a flood of writes can fill the server's storage, and every stream's writes fail; "+
			"nats stream edit KV_%s --max-bytes %d)", want.MaxBytes, want.Bucket, want.MaxBytes))
	case want.MaxBytes > 0 && have.MaxBytes != want.MaxBytes:
		diffs = append(diffs, fmt.Sprintf("max bytes %d (expected %d)", have.MaxBytes, want.MaxBytes))
	}
	if want.MaxValueSize > 0 && (have.MaxValueSize <= 0 || have.MaxValueSize > want.MaxValueSize) {
		diffs = append(diffs, fmt.Sprintf("max value size %d (expected %d: a value larger than any the worker writes is stored; "+
			"nats stream edit KV_%s --max-msg-size %d)", have.MaxValueSize, want.MaxValueSize, want.Bucket, want.MaxValueSize))
	}
	return diffs, nil
}
