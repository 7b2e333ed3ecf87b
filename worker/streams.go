package worker

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/xygroup/xygroup/worker/jsconfig"
)

// StreamSettings size the streams the worker creates when they are missing.
type StreamSettings struct {
	Replicas int // 1, or 3 on a 3-node cluster
	// CommandsMaxAge and CommandsMaxBytes bound the command history kept for replay.
	CommandsMaxAge   time.Duration
	CommandsMaxBytes int64
	EventsMaxAge     time.Duration
	EventsMaxBytes   int64
	// AckWait of the shared consumer; InProgress keeps longer work alive.
	AckWait       time.Duration
	MaxAckPending int
}

func (s StreamSettings) withDefaults() StreamSettings {
	if s.Replicas <= 0 {
		s.Replicas = 1
	}
	if s.CommandsMaxAge <= 0 {
		s.CommandsMaxAge = 7 * 24 * time.Hour
	}
	if s.CommandsMaxBytes <= 0 {
		s.CommandsMaxBytes = 1 << 30
	}
	if s.EventsMaxAge <= 0 {
		s.EventsMaxAge = 7 * 24 * time.Hour
	}
	if s.EventsMaxBytes <= 0 {
		s.EventsMaxBytes = 1 << 30
	}
	if s.AckWait <= 0 {
		s.AckWait = 30 * time.Second
	}
	if s.MaxAckPending <= 0 {
		s.MaxAckPending = 1000
	}
	return s
}

// CommandsStream is the configuration the worker creates: commands are kept after
// they are done (limits retention), as the source for replay.
func (s StreamSettings) CommandsStream() jetstream.StreamConfig {
	s = s.withDefaults()
	return jetstream.StreamConfig{
		Name:        StreamCommands,
		Description: "xygroup: create-breakout-group commands (kept for replay)",
		Subjects:    []string{SubjectCreate},
		Retention:   jetstream.LimitsPolicy,
		Storage:     jetstream.FileStorage,
		Replicas:    s.Replicas,
		MaxAge:      s.CommandsMaxAge,
		MaxBytes:    s.CommandsMaxBytes,
		Discard:     jetstream.DiscardOld,
		Duplicates:  2 * time.Minute,
	}
}

// EventsStream keeps events for downstream consumers. Its dedupe window makes a
// second terminal event of a command (same Nats-Msg-Id) a no-op.
func (s StreamSettings) EventsStream() jetstream.StreamConfig {
	s = s.withDefaults()
	return jetstream.StreamConfig{
		Name:        StreamEvents,
		Description: "xygroup: result and error events",
		Subjects:    []string{SubjectCreated, SubjectFailed + ".>", SubjectWaiting},
		Retention:   jetstream.LimitsPolicy,
		Storage:     jetstream.FileStorage,
		Replicas:    s.Replicas,
		MaxAge:      s.EventsMaxAge,
		MaxBytes:    s.EventsMaxBytes,
		Discard:     jetstream.DiscardOld,
		Duplicates:  time.Hour,
	}
}

// WorkersConsumer is the durable pull consumer every replica shares.
func (s StreamSettings) WorkersConsumer() jetstream.ConsumerConfig {
	s = s.withDefaults()
	return jetstream.ConsumerConfig{
		Durable:       ConsumerWorkers,
		Description:   "xygroup worker replicas",
		FilterSubject: SubjectCreate,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       s.AckWait,
		MaxDeliver:    -1, // a command ends in an event, never in a silent give-up
		MaxAckPending: s.MaxAckPending,
		DeliverPolicy: jetstream.DeliverAllPolicy,
		Replicas:      0, // the stream's
	}
}

// ensureStream creates the stream when it is missing. An existing stream is never
// changed: differences from the expected configuration are returned for the log,
// and only a missing subject (the worker could not work) or, with minReplicas,
// fewer replicas than want has (what it holds would live on fewer nodes than
// the operator asked for) is an error (jsconfig.MisconfiguredError). Replicas
// starting together may race to create it: "already exists" reads and compares.
func ensureStream(ctx context.Context, js jetstream.JetStream, want jetstream.StreamConfig, minReplicas bool) ([]string, error) {
	for attempt := 0; ; attempt++ {
		s, err := js.Stream(ctx, want.Name)
		if err == nil {
			have := s.CachedInfo().Config
			if minReplicas && max(have.Replicas, 1) < max(want.Replicas, 1) {
				return nil, jsconfig.TooFewReplicas("stream", want.Name, want.Name, max(have.Replicas, 1), max(want.Replicas, 1))
			}
			return compareStream(have, want)
		}
		if !errors.Is(err, jetstream.ErrStreamNotFound) {
			if attempt < 5 && ctx.Err() == nil {
				time.Sleep(time.Duration(attempt+1) * 200 * time.Millisecond) // leader election after a restart
				continue
			}
			return nil, fmt.Errorf("stream %s: %w", want.Name, err)
		}
		_, err = js.CreateStream(ctx, want)
		if err == nil {
			return nil, nil
		}
		if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) || attempt < 5 {
			continue
		}
		return nil, fmt.Errorf("create stream %s: %w", want.Name, err)
	}
}

func compareStream(have, want jetstream.StreamConfig) ([]string, error) {
	var diffs []string
	for _, subj := range want.Subjects {
		if !slices.Contains(have.Subjects, subj) {
			return nil, &jsconfig.MisconfiguredError{Msg: fmt.Sprintf("stream %s does not carry subject %s (it has %v)", want.Name, subj, have.Subjects)}
		}
	}
	if have.Retention != want.Retention {
		diffs = append(diffs, fmt.Sprintf("retention %s (expected %s)", have.Retention, want.Retention))
	}
	if have.Replicas != want.Replicas {
		diffs = append(diffs, fmt.Sprintf("replicas %d (expected %d)", have.Replicas, want.Replicas))
	}
	if have.Storage != want.Storage {
		diffs = append(diffs, fmt.Sprintf("storage %s (expected %s)", have.Storage, want.Storage))
	}
	if have.MaxAge != want.MaxAge {
		diffs = append(diffs, fmt.Sprintf("max age %s (expected %s)", have.MaxAge, want.MaxAge))
	}
	if have.MaxBytes != want.MaxBytes {
		diffs = append(diffs, fmt.Sprintf("max bytes %d (expected %d)", have.MaxBytes, want.MaxBytes))
	}
	if have.Duplicates < want.Duplicates {
		diffs = append(diffs, fmt.Sprintf("dedupe window %s (expected at least %s: a redelivered command could publish a second event after it)", have.Duplicates, want.Duplicates))
	}
	return diffs, nil
}

// ensureConsumer creates the shared consumer when missing; an existing one is
// used as the operator configured it, with its differences reported.
func ensureConsumer(ctx context.Context, js jetstream.JetStream, want jetstream.ConsumerConfig) (jetstream.Consumer, []string, error) {
	for attempt := 0; ; attempt++ {
		c, err := js.Consumer(ctx, StreamCommands, want.Durable)
		if err == nil {
			have := c.CachedInfo().Config
			var diffs []string
			if have.FilterSubject != want.FilterSubject && !slices.Contains(have.FilterSubjects, want.FilterSubject) {
				return nil, nil, fmt.Errorf("consumer %s filters %q, not %s", want.Durable, have.FilterSubject, want.FilterSubject)
			}
			if have.AckPolicy != jetstream.AckExplicitPolicy {
				return nil, nil, fmt.Errorf("consumer %s must acknowledge explicitly (it has %s)", want.Durable, have.AckPolicy)
			}
			if have.MaxDeliver != want.MaxDeliver {
				diffs = append(diffs, fmt.Sprintf("max deliver %d (expected %d: a command that runs out of deliveries ends without an event)", have.MaxDeliver, want.MaxDeliver))
			}
			if have.AckWait != want.AckWait {
				diffs = append(diffs, fmt.Sprintf("ack wait %s (expected %s)", have.AckWait, want.AckWait))
			}
			if have.MaxAckPending != want.MaxAckPending {
				diffs = append(diffs, fmt.Sprintf("max ack pending %d (expected %d)", have.MaxAckPending, want.MaxAckPending))
			}
			return c, diffs, nil
		}
		if !errors.Is(err, jetstream.ErrConsumerNotFound) && attempt >= 5 {
			return nil, nil, fmt.Errorf("consumer %s: %w", want.Durable, err)
		}
		if errors.Is(err, jetstream.ErrConsumerNotFound) {
			c, err = js.CreateConsumer(ctx, StreamCommands, want)
			if err == nil {
				return c, nil, nil
			}
		}
		if attempt >= 5 || ctx.Err() != nil {
			return nil, nil, fmt.Errorf("create consumer %s: %w", want.Durable, err)
		}
		time.Sleep(time.Duration(attempt+1) * 200 * time.Millisecond)
	}
}

// Setup creates the streams and the consumer when missing and logs how existing
// ones differ from what the worker would have created.
func Setup(ctx context.Context, js jetstream.JetStream, s StreamSettings, log zerolog.Logger) (jetstream.Consumer, error) {
	for _, cfg := range []jetstream.StreamConfig{s.CommandsStream(), s.EventsStream()} {
		diffs, err := ensureStream(ctx, js, cfg, false)
		if err != nil {
			return nil, err
		}
		for _, d := range diffs {
			log.Warn().Str("stream", cfg.Name).Str("difference", d).Msg("existing stream differs from the default; left as configured")
		}
	}
	c, diffs, err := ensureConsumer(ctx, js, s.WorkersConsumer())
	if err != nil {
		return nil, err
	}
	for _, d := range diffs {
		log.Warn().Str("consumer", ConsumerWorkers).Str("difference", d).Msg("existing consumer differs from the default; left as configured")
	}
	return c, nil
}
