package worker

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/xygroup/xygroup/worker/jsconfig"
)

// StreamSettings size the streams the worker creates when they are missing.
type StreamSettings struct {
	Replicas int // 1, or 3 on a 3-node cluster
	// CommandsMaxAge and CommandsMaxBytes bound the command history kept for
	// replay. A full commands stream refuses new commands; the workers trim
	// its acknowledged history before that (trim.go).
	CommandsMaxAge   time.Duration
	CommandsMaxBytes int64
	// CommandsMaxMsgSize bounds one message of the commands stream, headers
	// included: 0 is CommandsMaxMsgBytes, -1 none (NATS's payload limit).
	CommandsMaxMsgSize int32
	// HistoryTrimLag: the commands stream's history is trimmed up to the
	// shared consumer's ack floor as it was at least this long ago (default
	// 1 min), so that a cancel's scan of the commands above the floor it read
	// finds them still there.
	HistoryTrimLag time.Duration
	EventsMaxAge   time.Duration
	EventsMaxBytes int64
	// EventsMaxMsgSize bounds one message of the events stream, headers
	// included: 0 is EventsMaxMsgBytes, -1 none (NATS's payload limit). A
	// larger event is shaped to fit (events.go).
	EventsMaxMsgSize int32
	// RecordsMaxBytes bounds the commands bucket (xygroup-commands) and
	// MeetingsMaxBytes the meetings bucket (xygroup-meetings); 0 is 1 GiB and
	// 256 MiB. A full bucket refuses new records: commands then fail to start
	// and are retried, never dropped.
	RecordsMaxBytes  int64
	MeetingsMaxBytes int64
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
	if s.CommandsMaxMsgSize == 0 {
		s.CommandsMaxMsgSize = CommandsMaxMsgBytes
	}
	if s.HistoryTrimLag <= 0 {
		s.HistoryTrimLag = time.Minute
	}
	if s.EventsMaxAge <= 0 {
		s.EventsMaxAge = 7 * 24 * time.Hour
	}
	if s.EventsMaxBytes <= 0 {
		s.EventsMaxBytes = 1 << 30
	}
	if s.EventsMaxMsgSize == 0 {
		s.EventsMaxMsgSize = EventsMaxMsgBytes
	}
	if s.RecordsMaxBytes <= 0 {
		s.RecordsMaxBytes = 1 << 30
	}
	if s.MeetingsMaxBytes <= 0 {
		s.MeetingsMaxBytes = 256 << 20
	}
	if s.AckWait <= 0 {
		s.AckWait = 30 * time.Second
	}
	if s.MaxAckPending <= 0 {
		s.MaxAckPending = 1000
	}
	return s
}

// CommandsMaxMsgBytes bounds a message of the commands stream as NATS counts
// it, headers and body together: the command limit (MaxCommandBytes) and 8 KiB
// of headers, far more than a command's (Nats-Msg-Id, traceparent) and a
// replay's (its mark, deadline, command id and Nats-Msg-Id, under 2 KiB) take.
// A larger command is refused to its publisher.
const CommandsMaxMsgBytes = MaxCommandBytes + 8<<10

// EventsMaxMsgBytes bounds a message of the events stream as NATS counts it.
// The largest event is a failed event quoting a whole command
// (MaxCommandBytes) in Base64, 4/3 of it (341 KiB), with its two messages
// (maxMessageBytes each), its envelope and its headers: under 360 KiB. A
// larger event (a created event with many members) is shaped to fit.
const EventsMaxMsgBytes = 512 << 10

// ParkedMaxMsgBytes bounds a message of the parked stream: a command's message
// (CommandsMaxMsgBytes) and the headers parking adds (where it came from, when
// it was received: under 1 KiB).
const ParkedMaxMsgBytes = CommandsMaxMsgBytes + 4<<10

// RecordMaxValueBytes bounds a command's record: its terminal event (at most
// an event's message, EventsMaxMsgBytes, less recordReserve for the record's
// other fields) and those fields.
const RecordMaxValueBytes = EventsMaxMsgBytes

// smallRecordBytes bounds a value of the buckets whose records name a meeting,
// a tenant or a replica, and a few times and counters (under 1 KiB each).
const smallRecordBytes = 16 << 10

// CommandsStream is the configuration the worker creates: commands are kept after
// they are done (limits retention), as the source for replay. It carries live
// commands (SubjectCreate) and replays (SubjectReplay). Full, it refuses new
// commands (DiscardNew) rather than drop stored ones, done or not: the workers
// trim the history of the done ones (trim.go).
func (s StreamSettings) CommandsStream() jetstream.StreamConfig {
	s = s.withDefaults()
	return jetstream.StreamConfig{
		Name:        StreamCommands,
		Description: "xygroup: create-breakout-group commands (kept for replay)",
		Subjects:    []string{SubjectCreate, SubjectReplay, SubjectCancel},
		Retention:   jetstream.LimitsPolicy,
		Storage:     jetstream.FileStorage,
		Replicas:    s.Replicas,
		MaxAge:      s.CommandsMaxAge,
		MaxBytes:    s.CommandsMaxBytes,
		MaxMsgSize:  s.CommandsMaxMsgSize,
		Discard:     jetstream.DiscardNew,
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
		Subjects:    []string{SubjectCreated, SubjectFailed + ".>", SubjectWaiting, SubjectCancelRejected},
		Retention:   jetstream.LimitsPolicy,
		Storage:     jetstream.FileStorage,
		Replicas:    s.Replicas,
		MaxAge:      s.EventsMaxAge,
		MaxBytes:    s.EventsMaxBytes,
		MaxMsgSize:  s.EventsMaxMsgSize,
		Discard:     jetstream.DiscardOld,
		Duplicates:  time.Hour,
	}
}

// WorkersConsumer is the durable pull consumer every replica shares: live
// commands and replays.
func (s StreamSettings) WorkersConsumer() jetstream.ConsumerConfig {
	s = s.withDefaults()
	return jetstream.ConsumerConfig{
		Durable:        ConsumerWorkers,
		Description:    "xygroup worker replicas",
		FilterSubjects: []string{SubjectCreate, SubjectReplay, SubjectCancel},
		AckPolicy:      jetstream.AckExplicitPolicy,
		AckWait:        s.AckWait,
		MaxDeliver:     -1, // a command ends in an event, never in a silent give-up
		MaxAckPending:  s.MaxAckPending,
		DeliverPolicy:  jetstream.DeliverAllPolicy,
		Replicas:       0, // the stream's
	}
}

// addedSubjects are the subjects the worker adds to an existing stream, or to
// the shared consumer's filter, that lacks them: they came after a worker of
// an earlier version created the stream and the consumer.
var addedSubjects = []string{SubjectReplay, SubjectCancel, SubjectCancelRejected}

// missingSubjects splits the subjects of want that have lacks into those the
// worker adds itself (addedSubjects) and the others.
func missingSubjects(have, want []string) (add, other []string) {
	for _, subj := range want {
		switch {
		case slices.Contains(have, subj):
		case slices.Contains(addedSubjects, subj):
			add = append(add, subj)
		default:
			other = append(other, subj)
		}
	}
	return add, other
}

// refusal says whether a JetStream API request on subject failed for good, and
// what to do about it: the server answered with an error of the request (not
// of its own state), or the connection's permissions do not allow the request
// (it then goes unanswered and the server reports the violation to the
// connection). It is empty when retrying may help.
func refusal(js jetstream.JetStream, err error, subject string) string {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		if apiErr.Code >= 500 {
			return ""
		}
		return "remove the cause, then "
	}
	if last := js.Conn().LastError(); errors.Is(last, nats.ErrPermissionViolation) && strings.Contains(last.Error(), subject) {
		return "allow the worker user to publish $JS.API." + subject + " (deployments/nats/accounts.conf), or "
	}
	return ""
}

// addStreamSubjects adds subjects to an existing stream, as it is otherwise
// configured. A refusal is a MisconfiguredError that says what to do.
func addStreamSubjects(ctx context.Context, js jetstream.JetStream, have jetstream.StreamConfig, add []string, log zerolog.Logger) (jetstream.StreamConfig, error) {
	cfg := have
	cfg.Subjects = append(slices.Clip(have.Subjects), add...)
	uctx, cancel := context.WithTimeout(ctx, 5*time.Second) // a request the permissions refuse goes unanswered
	defer cancel()
	s, err := js.UpdateStream(uctx, cfg)
	if err == nil {
		log.Info().Str("stream", have.Name).Strs("added", add).Strs("subjects", cfg.Subjects).Msg("stream upgraded: subjects added")
		return s.CachedInfo().Config, nil
	}
	if fix := refusal(js, err, "STREAM.UPDATE."+have.Name); fix != "" {
		return have, &jsconfig.MisconfiguredError{Msg: fmt.Sprintf("stream %s does not carry subject %s (it has %v) and the worker could not add it (%v): "+
			"%sadd it yourself (nats stream edit %s --subjects %s)",
			have.Name, strings.Join(add, ", "), have.Subjects, err, fix, have.Name, strings.Join(cfg.Subjects, ","))}
	}
	return have, fmt.Errorf("stream %s: add subject %s: %w", have.Name, strings.Join(add, ", "), err)
}

// ensureStream creates the stream when it is missing. An existing stream is
// changed only to add the subjects of addedSubjects it lacks (logged at info):
// differences from the expected configuration are returned for the log, and
// only another missing subject (the worker could not work), a subject the
// worker could not add or, with minReplicas, fewer replicas than want has (what
// it holds would live on fewer nodes than the operator asked for) is an error
// (jsconfig.MisconfiguredError). Replicas starting together may race to create
// it: "already exists" reads and compares.
func ensureStream(ctx context.Context, js jetstream.JetStream, want jetstream.StreamConfig, minReplicas bool, log zerolog.Logger) ([]string, error) {
	for attempt := 0; ; attempt++ {
		s, err := js.Stream(ctx, want.Name)
		if err == nil {
			have := s.CachedInfo().Config
			if minReplicas && max(have.Replicas, 1) < max(want.Replicas, 1) {
				return nil, jsconfig.TooFewReplicas("stream", want.Name, want.Name, max(have.Replicas, 1), max(want.Replicas, 1))
			}
			if add, other := missingSubjects(have.Subjects, want.Subjects); len(add) > 0 && len(other) == 0 {
				if have, err = addStreamSubjects(ctx, js, have, add, log); err != nil {
					return nil, err
				}
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
	if have.Discard != want.Discard {
		why := ""
		if want.Name == StreamCommands {
			why = ": when full, it drops its oldest commands, done or not, instead of refusing new ones; " +
				"nats stream edit " + want.Name + " --discard new"
		}
		diffs = append(diffs, fmt.Sprintf("discard %s (expected %s%s)", discardName(have.Discard), discardName(want.Discard), why))
	}
	if want.MaxMsgSize > 0 && (have.MaxMsgSize <= 0 || have.MaxMsgSize > want.MaxMsgSize) {
		diffs = append(diffs, fmt.Sprintf("max message size %d (expected %d: %s; nats stream edit %s --max-msg-size %d)",
			have.MaxMsgSize, want.MaxMsgSize, largerMessage(want.Name), want.Name, want.MaxMsgSize))
	}
	if have.Duplicates < want.Duplicates {
		diffs = append(diffs, fmt.Sprintf("dedupe window %s (expected at least %s: a redelivered command could publish a second event after it)", have.Duplicates, want.Duplicates))
	}
	return diffs, nil
}

// largerMessage says what a stream without its message size limit lets in.
func largerMessage(stream string) string {
	if stream == StreamCommands {
		return "a larger command is accepted and then fails as invalid_command"
	}
	return "a publisher can store messages larger than any the worker writes, up to NATS's payload limit"
}

// discardName is a discard policy as the nats CLI names it: old or new.
func discardName(d jetstream.DiscardPolicy) string {
	return strings.ToLower(strings.TrimPrefix(d.String(), "Discard"))
}

// filters are the subjects a consumer takes; none is the whole stream.
func filters(c jetstream.ConsumerConfig) []string {
	if c.FilterSubject != "" {
		return append(slices.Clip(c.FilterSubjects), c.FilterSubject)
	}
	return c.FilterSubjects
}

// addConsumerFilters adds subjects to an existing consumer's filter, as it is
// otherwise configured.
func addConsumerFilters(ctx context.Context, js jetstream.JetStream, have jetstream.ConsumerConfig, add []string, log zerolog.Logger) (jetstream.Consumer, error) {
	cfg := have
	cfg.FilterSubject, cfg.FilterSubjects = "", append(filters(have), add...)
	uctx, cancel := context.WithTimeout(ctx, 5*time.Second) // a request the permissions refuse goes unanswered
	defer cancel()
	c, err := js.UpdateConsumer(uctx, StreamCommands, cfg)
	if err == nil {
		log.Info().Str("consumer", have.Durable).Strs("added", add).Strs("filterSubjects", cfg.FilterSubjects).Msg("consumer upgraded: filter subjects added")
		return c, nil
	}
	if fix := refusal(js, err, "CONSUMER.CREATE."+StreamCommands+"."+have.Durable); fix != "" {
		return nil, &jsconfig.MisconfiguredError{Msg: fmt.Sprintf("consumer %s filters %v, without %s, and the worker could not add it (%v): "+
			"%sadd it yourself (nats consumer edit %s %s --filter %s)",
			have.Durable, filters(have), strings.Join(add, ", "), err, fix, StreamCommands, have.Durable, strings.Join(cfg.FilterSubjects, " --filter "))}
	}
	return nil, fmt.Errorf("consumer %s: add filter %s: %w", have.Durable, strings.Join(add, ", "), err)
}

// ensureConsumer creates the shared consumer when missing; an existing one is
// used as the operator configured it, with its differences reported, except
// that the subjects of addedSubjects are added to its filter when it lacks them
// (logged at info).
func ensureConsumer(ctx context.Context, js jetstream.JetStream, want jetstream.ConsumerConfig, log zerolog.Logger) (jetstream.Consumer, []string, error) {
	for attempt := 0; ; attempt++ {
		c, err := js.Consumer(ctx, StreamCommands, want.Durable)
		if err == nil {
			have := c.CachedInfo().Config
			var diffs []string
			if fs := filters(have); len(fs) > 0 { // no filter: the whole stream
				add, other := missingSubjects(fs, filters(want))
				if len(other) > 0 {
					return nil, nil, fmt.Errorf("consumer %s filters %v, not %v", want.Durable, fs, filters(want))
				}
				if len(add) > 0 {
					if c, err = addConsumerFilters(ctx, js, have, add, log); err != nil {
						return nil, nil, err
					}
					have = c.CachedInfo().Config
				}
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
		diffs, err := ensureStream(ctx, js, cfg, false, log)
		if err != nil {
			return nil, err
		}
		for _, d := range diffs {
			log.Warn().Str("stream", cfg.Name).Str("difference", d).Msg("existing stream differs from the default; left as configured")
		}
	}
	c, diffs, err := ensureConsumer(ctx, js, s.WorkersConsumer(), log)
	if err != nil {
		return nil, err
	}
	for _, d := range diffs {
		log.Warn().Str("consumer", ConsumerWorkers).Str("difference", d).Msg("existing consumer differs from the default; left as configured")
	}
	return c, nil
}
