package commands

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/xygroup/xygroup/worker/contract"
	"github.com/xygroup/xygroup/worker/record"
)

// WorthReplaying are the failure classes a replay selects by default: the ones a
// later try can change. invalid_command, already_open, too_many_groups and
// rejected fail again the same way.
var WorthReplaying = []string{"unavailable", "meeting_not_started"}

// Selection says which commands to replay.
type Selection struct {
	// Source: "failed" (failed events), "commands" (the commands stream) or "file" (NDJSON).
	Source     string    `json:"source"`
	Classes    []string  `json:"classes,omitempty"`
	Meeting    string    `json:"meeting,omitempty"`
	Enterprise string    `json:"enterprise,omitempty"`
	Since      time.Time `json:"since,omitzero"`
	Until      time.Time `json:"until,omitzero"`
	SeqFrom    uint64    `json:"seqFrom,omitempty"`
	SeqTo      uint64    `json:"seqTo,omitempty"`
	File       string    `json:"file,omitempty"`
	FileHash   string    `json:"fileHash,omitempty"`
}

// ID names a replay by its selection, so that running the same replay again
// resumes it.
func (s Selection) ID() string {
	b, _ := json.Marshal(s)
	h := sha256.Sum256(b)
	return "r" + hex.EncodeToString(h[:6])
}

// ResolutionReuse is how long a selection given relative to the run ("--since
// 1h") keeps the times its first run resolved it to: a dry run, and the real
// run after it, are one replay.
const ResolutionReuse = 10 * time.Minute

// Relative is a selection whose --since and/or --until are given as durations
// before the run. Resolve fixes them to absolute times.
type Relative struct {
	Selection Selection // its absolute parts
	// SinceAgo and UntilAgo: how long before the run; nil when not relative.
	SinceAgo, UntilAgo *time.Duration
}

// IsRelative reports whether r has a time to resolve.
func (r Relative) IsRelative() bool { return r.SinceAgo != nil || r.UntilAgo != nil }

// at resolves r against now, to whole seconds (the resume command prints them
// in RFC 3339): since down, until up, so no second of the window is lost.
// "The last hour" ends now: a resumed replay must not select the failures of
// its own commands, nor any newer ones.
func (r Relative) at(now time.Time) Selection {
	s := r.Selection
	end := now.UTC().Truncate(time.Second)
	if end.Before(now) {
		end = end.Add(time.Second)
	}
	if r.SinceAgo != nil {
		s.Since = end.Add(-*r.SinceAgo)
		if s.Until.IsZero() && r.UntilAgo == nil {
			s.Until = end
		}
	}
	if r.UntilAgo != nil {
		s.Until = end.Add(-*r.UntilAgo)
	}
	return s
}

func (r Relative) key() string {
	given := struct {
		Selection Selection `json:"selection"`
		Since     string    `json:"since,omitempty"`
		Until     string    `json:"until,omitempty"`
	}{Selection: r.Selection}
	if r.SinceAgo != nil {
		given.Since = r.SinceAgo.String()
	}
	if r.UntilAgo != nil {
		given.Until = r.UntilAgo.String()
	}
	b, _ := json.Marshal(given)
	h := sha256.Sum256(b)
	return "given-" + hex.EncodeToString(h[:8])
}

type resolution struct {
	Selection  Selection `json:"selection"`
	ResolvedAt time.Time `json:"resolvedAt"`
}

// Resolve fixes r's relative times. The same selection given again resolves
// to the same times (hence the same replay) within ResolutionReuse of its
// first resolution, or for as long as that replay stopped before its end;
// after that, against now. id names the replay when it is not derived from
// the selection (--id). It returns when the times were resolved.
func (r Relative) Resolve(ctx context.Context, js jetstream.JetStream, id string, now time.Time) (Selection, time.Time, error) {
	if !r.IsRelative() {
		return r.Selection, now, nil
	}
	kv, err := replaysBucket(ctx, js)
	if err != nil {
		return Selection{}, now, err
	}
	key := r.key()
	if e, err := kv.Get(ctx, key); err == nil {
		var prev resolution
		if json.Unmarshal(e.Value(), &prev) == nil {
			if now.Sub(prev.ResolvedAt) < ResolutionReuse {
				return prev.Selection, prev.ResolvedAt, nil
			}
			if id == "" {
				id = prev.Selection.ID()
			}
			cp, err := LoadCheckpoint(ctx, js, id)
			if err != nil {
				return Selection{}, now, err
			}
			if cp != nil && cp.Done < cp.Total {
				return prev.Selection, prev.ResolvedAt, nil
			}
		}
	} else if !errors.Is(err, jetstream.ErrKeyNotFound) {
		return Selection{}, now, err
	}
	res := resolution{Selection: r.at(now), ResolvedAt: now.UTC()}
	b, _ := json.Marshal(res)
	if _, err := kv.Put(ctx, key, b); err != nil {
		return Selection{}, now, err
	}
	return res.Selection, res.ResolvedAt, nil
}

// ReplayItem is one command to replay.
type ReplayItem struct {
	CommandID string
	// EnterpriseID: the command's tenant ("" when it names none: the
	// workers' default, Replayer.DefaultEnterprise).
	EnterpriseID string
	Raw          []byte
	Class        string // the class it failed with (source "failed")
	Meeting      string
}

// Select lists the commands of a selection, one per commandId (the latest), in
// stream order.
func Select(ctx context.Context, js jetstream.JetStream, s Selection) ([]ReplayItem, error) {
	var items []ReplayItem
	switch s.Source {
	case "failed":
		classes := s.Classes
		if len(classes) == 0 {
			classes = WorthReplaying
		}
		subjects := make([]string, len(classes))
		for i, c := range classes {
			subjects[i] = contract.SubjectFailed + "." + c
		}
		err := scan(ctx, js, contract.StreamEvents, subjects, s.Since, 0, func(m contract.Msg, meta *jetstream.MsgMetadata) bool {
			if !s.Until.IsZero() && meta.Timestamp.After(s.Until) {
				return false
			}
			ev, err := m.Event()
			// A command cut to fit its event is not in it whole: it can be
			// replayed only from the commands stream (--from-commands).
			if err != nil || ev.CommandTruncated || !s.matches(ev.EnterpriseID, ev.MeetingRoomNumber) {
				return true
			}
			raw, err := originalBytes(ev.Command, ev.CommandEncoding)
			if err == nil {
				items = append(items, ReplayItem{CommandID: ev.CommandID, EnterpriseID: ev.EnterpriseID, Raw: raw, Class: ev.Class, Meeting: ev.MeetingRoomNumber})
			}
			return true
		})
		if err != nil {
			return nil, err
		}
	case "commands":
		err := scan(ctx, js, contract.StreamCommands, []string{contract.SubjectCreate}, s.Since, s.SeqFrom, func(m contract.Msg, meta *jetstream.MsgMetadata) bool {
			if (!s.Until.IsZero() && meta.Timestamp.After(s.Until)) || (s.SeqTo != 0 && meta.Sequence.Stream > s.SeqTo) {
				return false
			}
			peek := m.Identity()
			if !s.matches(peek.EnterpriseID, peek.MeetingRoomNumber) {
				return true
			}
			id := peek.CommandID
			if id == "" {
				id = m.Headers().Get(nats.MsgIdHdr)
			}
			if id == "" {
				id = contract.StreamCommands + ":" + strconv.FormatUint(meta.Sequence.Stream, 10)
			}
			items = append(items, ReplayItem{CommandID: id, EnterpriseID: peek.EnterpriseID, Raw: m.Data(), Meeting: peek.MeetingRoomNumber})
			return true
		})
		if err != nil {
			return nil, err
		}
	case "file":
		f, err := os.Open(s.File)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		parsed, err := Parse(f, s.File)
		if err != nil {
			return nil, err
		}
		for _, it := range parsed {
			if it.Err != nil {
				return nil, fmt.Errorf("%s: invalid command: %v", it.Where(), it.Err)
			}
			if it.ID == "" {
				return nil, fmt.Errorf("%s: a replayed command needs its commandId", it.Where())
			}
			peek := contract.IdentityOf(it.Raw)
			if s.matches(peek.EnterpriseID, peek.MeetingRoomNumber) {
				items = append(items, ReplayItem{CommandID: it.ID, EnterpriseID: peek.EnterpriseID, Raw: it.Raw, Meeting: peek.MeetingRoomNumber})
			}
		}
	default:
		return nil, fmt.Errorf("unknown replay source %q", s.Source)
	}
	// One per command of a tenant: its latest occurrence.
	type key struct{ enterprise, id string }
	last := map[key]int{}
	for i, it := range items {
		last[key{it.EnterpriseID, it.CommandID}] = i
	}
	out := items[:0]
	for i, it := range items {
		if last[key{it.EnterpriseID, it.CommandID}] == i {
			out = append(out, it)
		}
	}
	return out, nil
}

func (s Selection) matches(enterprise, meeting string) bool {
	return (s.Meeting == "" || s.Meeting == meeting) && (s.Enterprise == "" || s.Enterprise == enterprise)
}

// originalBytes undoes the failed event's encoding of the original command.
func originalBytes(cmd json.RawMessage, encoding string) ([]byte, error) {
	if len(cmd) > 0 && cmd[0] == '"' {
		var s string
		if err := json.Unmarshal(cmd, &s); err != nil {
			return nil, err
		}
		if encoding == "base64" {
			return base64.StdEncoding.DecodeString(s)
		}
		return []byte(s), nil
	}
	return cmd, nil
}

// scan reads a stream's stored messages on subjects from a time or a sequence,
// until visit says stop or none is left.
func scan(ctx context.Context, js jetstream.JetStream, stream string, subjects []string, since time.Time, seq uint64,
	visit func(contract.Msg, *jetstream.MsgMetadata) bool) error {
	r, err := contract.NewReader(ctx, js, contract.ReadOptions{Stream: stream, Subjects: subjects, StartSeq: seq, StartTime: since,
		Batch: 500, Wait: 2 * time.Second})
	if err != nil {
		return fmt.Errorf("read %s: %w", stream, err)
	}
	for m, err := range r.Messages(ctx) {
		if err != nil {
			return err
		}
		meta := m.Meta()
		if meta == nil {
			continue
		}
		if !visit(m, meta) {
			return nil
		}
	}
	return nil
}

// BucketReplays keeps each replay's progress, so an interrupted replay resumes.
const BucketReplays = "xygroup-replays"

// Checkpoint is a replay's progress.
type Checkpoint struct {
	ID        string    `json:"id"`
	Selection Selection `json:"selection"`
	NewIDs    bool      `json:"newIds,omitempty"`
	// Deadline is the replayed commands' new deadline (zero: the workers'
	// maximum wait from each one's arrival); a resumed replay keeps it.
	Deadline  time.Time `json:"deadline,omitzero"`
	Total     int       `json:"total"`
	Done      int       `json:"done"` // items handled, in order
	StartedAt time.Time `json:"startedAt"`
}

// Summary is a replay's outcome.
type Summary struct {
	Selected        int            `json:"selected"`
	Published       int            `json:"published"`
	SkippedDone     int            `json:"skippedDone"`     // created already: not sent again
	AlreadyReplayed int            `json:"alreadyReplayed"` // handled by this replay before it was resumed
	Created         int            `json:"created"`
	FailedAgain     map[string]int `json:"failedAgain"`
	Pending         int            `json:"pending"` // no outcome yet when the wait ended
	// PendingIDs are the commandIds of the pending ones, in the selection's order.
	PendingIDs []string `json:"pendingIds,omitempty"`
}

// Replayer re-publishes commands on contract.SubjectReplay, marked as replays
// (live commands come first), keeping their commandId so that created ones are
// never sent again. Its user must be allowed to publish contract.SubjectReplay.
type Replayer struct {
	JS jetstream.JetStream
	// NewIDs gives each command a new commandId (<id>~<replay>), so that even
	// created ones are sent again. Off by default.
	NewIDs bool
	// DefaultEnterprise is the workers' default tenant (XYLINK_ENTERPRISE_ID):
	// the tenant of commands that name none.
	DefaultEnterprise string
	// Deadline is the new deadline of the commands it re-publishes: the
	// deadline that ended a failed command has passed. Zero: each gets the
	// workers' maximum wait from the time it arrives.
	Deadline time.Time
	// Progress is told, as they change, how many commands were handled
	// (published or skipped) and how many are done (skipped, or ended).
	Progress func(handled, done, total int)
}

func replaysBucket(ctx context.Context, js jetstream.JetStream) (jetstream.KeyValue, error) {
	kv, err := js.KeyValue(ctx, BucketReplays)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		kv, err = js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: BucketReplays, Description: "xygroup: replay progress",
			History: 1, TTL: 30 * 24 * time.Hour, MaxBytes: 64 << 20, MaxValueSize: 64 << 10}) // a replay's selection and progress
		if errors.Is(err, jetstream.ErrBucketExists) {
			kv, err = js.KeyValue(ctx, BucketReplays)
		}
	}
	return kv, err
}

// LoadCheckpoint returns a replay's saved progress, if any.
func LoadCheckpoint(ctx context.Context, js jetstream.JetStream, id string) (*Checkpoint, error) {
	kv, err := replaysBucket(ctx, js)
	if err != nil {
		return nil, err
	}
	e, err := kv.Get(ctx, id)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var c Checkpoint
	if err := json.Unmarshal(e.Value(), &c); err != nil {
		return nil, err
	}
	return &c, nil
}

func saveCheckpoint(ctx context.Context, kv jetstream.KeyValue, c *Checkpoint) error {
	b, _ := json.Marshal(c)
	_, err := kv.Put(ctx, c.ID, b)
	return err
}

// Run replays items under checkpoint cp (Done items were handled by an earlier
// run), then waits until each published command has its outcome or waitCtx
// ends. An interrupted run (ctx) saves its progress and returns ctx's error.
func (r *Replayer) Run(ctx, waitCtx context.Context, cp *Checkpoint, items []ReplayItem) (Summary, error) {
	sum := Summary{Selected: len(items), FailedAgain: map[string]int{}}
	kv, err := replaysBucket(ctx, r.JS)
	if err != nil {
		return sum, err
	}
	if cp.StartedAt.IsZero() {
		cp.StartedAt = time.Now().UTC()
	}
	cp.Total = len(items)
	// The checkpoint exists before anything is published: a run interrupted
	// at any point leaves its start, from which the resumed run follows the
	// outcomes (its own start would miss those that ended meanwhile).
	if err := saveCheckpoint(ctx, kv, cp); err != nil {
		return sum, err
	}
	// Follow the replay's outcomes from its start: a resumed run counts the
	// earlier run's too.
	outcomes, err := r.follow(ctx, cp)
	if err != nil {
		return sum, err
	}
	// Outcomes are matched to commands by tenant and commandId; a command of
	// the default tenant when it is not known here, by commandId alone.
	expect := map[Ref]bool{}
	var order []Ref // expect's keys, in the selection's order
	handled, seen := 0, 0
	report := func() {
		if r.Progress != nil {
			r.Progress(handled, seen, len(items))
		}
	}
	for i, it := range items {
		id := it.CommandID
		if r.NewIDs {
			id = it.CommandID + "~" + cp.ID
		}
		enterprise := it.EnterpriseID
		if enterprise == "" {
			enterprise = r.DefaultEnterprise
		}
		st, err := record.Lookup(ctx, r.JS, enterprise, id)
		if err != nil {
			cp.Done = max(cp.Done, i) // interrupted (Ctrl-C) or NATS away: the progress so far
			_ = saveCheckpoint(context.WithoutCancel(ctx), kv, cp)
			return sum, err
		}
		switch {
		case !r.NewIDs && st.Terminal == contract.SubjectCreated && st.ReplayID != cp.ID:
			sum.SkippedDone++
			handled++
			seen++
			report()
			continue
		case i < cp.Done || (st.ReplayID == cp.ID && st.Terminal != ""):
			sum.AlreadyReplayed++
		default:
			raw := it.Raw
			switch {
			case !isObject(raw):
				// It cannot carry a commandId: the header that comes with it
				// (HeaderReplayCommandID) names it.
			case r.NewIDs:
				if raw, err = withCommandID(raw, id); err != nil {
					return sum, fmt.Errorf("%s: %w", it.CommandID, err)
				}
			case !hasCommandID(raw):
				// Known by its Nats-Msg-Id (or its place in the stream): the
				// replay's own Nats-Msg-Id would give it another identity, with
				// a record of its own. It keeps its id in the command.
				if with, err := withCommandID(raw, id); err == nil {
					raw = with
				}
			}
			if err := r.publish(ctx, cp.ID, it.EnterpriseID, id, raw); err != nil {
				cp.Done = i
				_ = saveCheckpoint(context.WithoutCancel(ctx), kv, cp)
				return sum, err
			}
			sum.Published++
		}
		ref := Ref{EnterpriseID: enterprise, CommandID: id}
		if !expect[ref] {
			order = append(order, ref)
		}
		expect[ref] = true
		handled++
		if handled%100 == 0 {
			cp.Done = i + 1
			if err := saveCheckpoint(ctx, kv, cp); err != nil {
				return sum, err
			}
		}
		report()
	}
	cp.Done = len(items)
	if err := saveCheckpoint(context.WithoutCancel(ctx), kv, cp); err != nil {
		return sum, err
	}
	// Outcomes: the replay's own terminal events.
	got := map[Ref]bool{}
	pending := func() Summary {
		for _, ref := range order {
			if !got[ref] {
				sum.PendingIDs = append(sum.PendingIDs, ref.CommandID)
			}
		}
		sum.Pending = len(sum.PendingIDs)
		return sum
	}
	for len(got) < len(expect) {
		select {
		case <-waitCtx.Done():
			return pending(), nil
		case o, ok := <-outcomes:
			if !ok {
				return pending(), nil
			}
			k := Ref{EnterpriseID: o.enterpriseID, CommandID: o.commandID}
			if !expect[k] {
				if k.EnterpriseID = ""; !expect[k] {
					continue
				}
			}
			if got[k] {
				continue
			}
			got[k] = true
			if o.class == "" {
				sum.Created++
			} else {
				sum.FailedAgain[o.class]++
			}
			seen++
			report()
		}
	}
	return sum, nil
}

// publish sends a command on the replay subject, the only one on which the
// worker honours the replay mark, and waits for the commands stream's ack.
// Its Nats-Msg-Id names the tenant as the command does (MsgID), so that two
// tenants' commands with one commandId are both replayed. The command's id
// goes with it (HeaderReplayCommandID): a command that does not name itself is
// named by it, not by the replay's Nats-Msg-Id, and its outcome carries the id
// the replay waits for.
func (r *Replayer) publish(ctx context.Context, replayID, enterpriseID, commandID string, raw []byte) error {
	m := nats.NewMsg(contract.SubjectReplay)
	m.Data = raw
	m.Header.Set(contract.HeaderReplay, replayID)
	if !r.Deadline.IsZero() {
		m.Header.Set(contract.HeaderReplayDeadline, r.Deadline.UTC().Format(time.RFC3339Nano))
	}
	m.Header.Set(contract.HeaderReplayCommandID, commandID)
	m.Header.Set(nats.MsgIdHdr, "xygroup.replay."+replayID+"."+MsgID(enterpriseID, commandID))
	_, err := r.JS.PublishMsg(ctx, m)
	if errors.Is(err, nats.ErrNoResponders) || errors.Is(err, jetstream.ErrNoStreamResponse) {
		return fmt.Errorf("publish %s: no stream answers on %s (a worker of this version adds it to %s when it starts): %w",
			commandID, contract.SubjectReplay, contract.StreamCommands, err)
	}
	if err != nil {
		return fmt.Errorf("publish %s: %s%w", commandID, Refusal(err), err)
	}
	return nil
}

type outcome struct{ commandID, enterpriseID, class string }

// follow streams the terminal events of replay cp from its start.
func (r *Replayer) follow(ctx context.Context, cp *Checkpoint) (<-chan outcome, error) {
	start := cp.StartedAt.Add(-time.Second)
	rd, err := contract.NewReader(ctx, r.JS, contract.ReadOptions{Subjects: []string{contract.SubjectCreated, contract.SubjectFailedAll},
		StartTime: start, Follow: true, Wait: time.Second})
	if err != nil {
		return nil, fmt.Errorf("follow events: %w", err)
	}
	suffix := ".replay." + cp.ID
	out := make(chan outcome, 1024)
	go func() {
		defer close(out)
		for m, err := range rd.Messages(ctx) {
			if err != nil {
				continue // until ctx ends: its error is the last
			}
			if !strings.HasSuffix(m.Headers().Get(nats.MsgIdHdr), suffix) {
				continue
			}
			e, _ := m.Event() // a field of another type stays empty; the others are read
			select {
			case out <- outcome{commandID: e.CommandID, enterpriseID: e.EnterpriseID, class: e.Class}:
			case <-ctx.Done():
				return
			}
		}
	}()
	return out, nil
}

// hasCommandID reports whether the command names its commandId (or is not a
// JSON object, which cannot be given one).
func hasCommandID(raw []byte) bool {
	var peek struct {
		CommandID any `json:"commandId"`
	}
	return json.Unmarshal(raw, &peek) != nil || peek.CommandID != nil
}

// isObject reports whether raw is a JSON object, which can carry a commandId.
func isObject(raw []byte) bool {
	var m map[string]json.RawMessage
	return json.Unmarshal(raw, &m) == nil && m != nil // null decodes into a nil map
}

func withCommandID(raw []byte, id string) ([]byte, error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil || m == nil {
		return nil, errors.New("not a JSON object: a new commandId cannot be set")
	}
	b, _ := json.Marshal(id)
	m["commandId"] = b
	return json.Marshal(m)
}

// Classes of a list of items, for a dry run.
func Classes(items []ReplayItem) map[string]int {
	out := map[string]int{}
	for _, it := range items {
		c := it.Class
		if c == "" {
			c = "(from commands)"
		}
		out[c]++
	}
	return out
}
