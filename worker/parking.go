package worker

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
)

// Parking: a command whose meeting has not started (66620, or a notBefore in the
// future) is moved out of the shared consumer into XYGROUP_PARKED, under a subject
// per meeting, and acknowledged. It then holds no ack-pending slot and spends no
// delivery. One record per meeting in the xygroup-meetings bucket schedules that
// meeting's probes: across the cluster one parked command at a time is tried
// (claimed by compare-and-swap), with capped exponential backoff. When a probe gets
// an answer about the meeting (success or a business error), the meeting is
// released: a consumer on its subject hands every parked command to the workers
// at once. Commands for a meeting known to be waiting are parked without a call.
const (
	StreamParked    = "XYGROUP_PARKED"
	subjectParked   = "xygroup.parked"
	BucketMeetings  = "xygroup-meetings"
	releasePrefix   = "xygroup-release-"
	hdrReceived     = "Xygroup-Received"
	hdrSourceStream = "Xygroup-Source-Stream"
	hdrSourceSeq    = "Xygroup-Source-Seq"
	hdrSourceMsgID  = "Xygroup-Source-Msg-Id"
)

// Meeting states.
const (
	meetingWaiting  = "waiting"  // parked commands wait; probes are scheduled
	meetingReleased = "released" // the meeting answered; its parked commands are due
	laneOpen        = "lane"     // a tenant's lane: its commands are taken at its pace (see lanes.go)
)

// Record kinds: a waiting meeting, or a tenant whose breaker is open.
const (
	kindMeeting = ""
	kindHold    = "breaker"
	kindLane    = "lane"
)

// meetingRecord schedules one meeting's probes, or (Kind "breaker") the
// half-open probe of a tenant whose commands are held while its breaker is open.
type meetingRecord struct {
	Kind         string    `json:"kind,omitempty"`
	EnterpriseID string    `json:"enterpriseId"`
	Meeting      string    `json:"meetingRoomNumber"`
	State        string    `json:"state"`
	Probes       int       `json:"probes"`
	NextProbeAt  time.Time `json:"nextProbeAt"`
	LeaseUntil   time.Time `json:"leaseUntil,omitzero"`
	// EarliestDeadline of its parked commands (an upper bound is fine: the probe
	// owner scans and corrects it).
	EarliestDeadline time.Time `json:"earliestDeadline"`
	WaitingSince     time.Time `json:"waitingSince"`
	ReleasedAt       time.Time `json:"releasedAt,omitzero"`
	// Owner is the replica that serves a lane, until LeaseUntil.
	Owner string `json:"owner,omitempty"`
	// NotBeforeOnly: its commands wait only for their notBefore; nothing said
	// the meeting has not started, so its other commands are not parked for it.
	// A 66620 answer clears it.
	NotBeforeOnly bool `json:"notBeforeOnly,omitempty"`
	// Parks counts the commands parked under the record. Every park writes
	// it, so that a forget (a delete at the revision it read) fails when a
	// command was parked after its read (see prober.forget).
	Parks int `json:"parks,omitempty"`
}

// meetingToken names a meeting in subjects and keys: a hash, since meeting
// numbers and enterprise ids may hold characters subjects may not.
func meetingToken(enterpriseID, meeting string) string {
	h := sha256.Sum256([]byte(enterpriseID + "\x00" + meeting))
	return hex.EncodeToString(h[:12])
}

// holdToken names the hold of a tenant whose breaker is open.
func holdToken(enterpriseID string) string { return meetingToken(enterpriseID, "\x01breaker-hold") }

// laneToken names the lane of a crowded tenant.
func laneToken(enterpriseID string) string { return meetingToken(enterpriseID, "\x02lane") }

func parkedSubject(token string) string { return subjectParked + "." + token }

// ParkedStream is the stream of parked commands: a work queue (a released
// command's ack removes it), never discarding (full, it refuses to park: a
// command that would wait fails as over_quota, see Worker.notParked).
func (s StreamSettings) ParkedStream() jetstream.StreamConfig {
	s = s.withDefaults()
	return jetstream.StreamConfig{
		Name:        StreamParked,
		Description: "xygroup: commands waiting for their meeting to start",
		Subjects:    []string{subjectParked + ".>"},
		Retention:   jetstream.WorkQueuePolicy,
		Storage:     jetstream.FileStorage,
		Replicas:    s.Replicas,
		MaxBytes:    s.CommandsMaxBytes,
		MaxMsgSize:  s.parkedMaxMsgSize(),
		Discard:     jetstream.DiscardNew,
		Duplicates:  time.Hour,
	}
}

// parkedMaxMsgSize follows the commands stream's: a command it took can be parked.
func (s StreamSettings) parkedMaxMsgSize() int32 {
	if s.CommandsMaxMsgSize < 0 {
		return -1
	}
	return s.CommandsMaxMsgSize + (ParkedMaxMsgBytes - CommandsMaxMsgBytes)
}

// meetingsBucket: one small record per waiting meeting, hold or lane.
func (s StreamSettings) meetingsBucket() jetstream.KeyValueConfig {
	s = s.withDefaults()
	return jetstream.KeyValueConfig{Bucket: BucketMeetings, Description: "xygroup: probe schedule of waiting meetings",
		History: 1, Storage: jetstream.FileStorage, Replicas: s.Replicas, MaxBytes: s.MeetingsMaxBytes, MaxValueSize: smallRecordBytes}
}

// meetingView is this replica's copy of the meetings bucket, kept by a watcher.
type meetingView struct {
	mu       sync.RWMutex
	meetings map[string]meetingEntry
}

type meetingEntry struct {
	rec meetingRecord
	rev uint64
}

func (v *meetingView) get(token string) (meetingEntry, bool) {
	v.mu.RLock()
	defer v.mu.RUnlock()
	e, ok := v.meetings[token]
	return e, ok
}

func (v *meetingView) all() map[string]meetingEntry {
	v.mu.RLock()
	defer v.mu.RUnlock()
	out := make(map[string]meetingEntry, len(v.meetings))
	for k, e := range v.meetings {
		out[k] = e
	}
	return out
}

// watch keeps the view current until ctx ends; it returns once the view holds
// the bucket's current contents.
func (v *meetingView) watch(ctx context.Context, kv jetstream.KeyValue, log zerolog.Logger) error {
	err := watchBucket(ctx, kv, func(key string, value []byte, rev uint64) {
		var r meetingRecord
		if err := json.Unmarshal(value, &r); err != nil {
			log.Warn().Err(err).Str("key", key).Msg("unreadable meeting record")
			return
		}
		v.mu.Lock()
		v.meetings[key] = meetingEntry{rec: r, rev: rev}
		v.mu.Unlock()
	}, func(key string) {
		v.mu.Lock()
		delete(v.meetings, key)
		v.mu.Unlock()
	})
	if err != nil {
		return fmt.Errorf("watch %s: %w", BucketMeetings, err)
	}
	return nil
}

// parker stores commands in the parked stream and keeps meeting records.
type parker struct {
	js       jetstream.JetStream
	parked   jetstream.Stream
	meetings jetstream.KeyValue
	view     *meetingView
	backoff  Backoff // between probes of one meeting
	now      func() time.Time
	shares   *parkedShares // nil: no tenant shares
	// fullAt is when a store last found the parked stream, or the record
	// that lets a copy out, full (unix nanoseconds; 0: a store succeeded
	// since).
	fullAt atomic.Int64
}

// full reports whether a store found the parked stream full less than
// parkedFullRetry ago, with none stored since.
func (p *parker) full() bool {
	t := p.fullAt.Load()
	return t != 0 && p.now().Sub(time.Unix(0, t)) < parkedFullRetry
}

// park stores the command under its meeting and makes sure the meeting has a
// probe schedule. first is when the first probe may run (notBefore, or now plus
// the first backoff). It returns the meeting's next probe time.
// toMeeting turns a held command's 66620 into parking under its meeting.
func (p *parker) toMeeting(v verdict) verdict {
	return parkUnder(p.now().Add(p.backoff.Delay(1)), v.attempts, v.deadline).learned(v)
}

// parkedAt is where a command was parked: its token's subject, its place in
// the parked stream, and (under a meeting or hold) the next probe.
type parkedAt struct {
	token string
	seq   uint64
	next  time.Time
}

func (p *parker) park(ctx context.Context, d *Decoded, del *delivery, deadline, first time.Time) (parkedAt, error) {
	return p.storeFor(ctx, meetingToken(d.EnterpriseID, d.Cmd.MeetingRoomNumber), kindMeeting, d, del, deadline, first, false)
}

// parkAhead parks a command until its notBefore, under its meeting, without
// making the meeting wait for its other commands.
func (p *parker) parkAhead(ctx context.Context, d *Decoded, del *delivery, deadline, notBefore time.Time) (parkedAt, error) {
	return p.storeFor(ctx, meetingToken(d.EnterpriseID, d.Cmd.MeetingRoomNumber), kindMeeting, d, del, deadline, notBefore, true)
}

// hold stores a command of a tenant whose breaker is open; the tenant's hold
// record schedules the half-open probe at the breaker's openUntil.
func (p *parker) hold(ctx context.Context, d *Decoded, del *delivery, deadline, openUntil time.Time) (parkedAt, error) {
	return p.store(ctx, holdToken(d.EnterpriseID), kindHold, d, del, deadline, openUntil)
}

func (p *parker) store(ctx context.Context, token, kind string, d *Decoded, del *delivery, deadline, first time.Time) (parkedAt, error) {
	return p.storeFor(ctx, token, kind, d, del, deadline, first, false)
}

// storeFor is store; ahead: the command waits only for its notBefore.
func (p *parker) storeFor(ctx context.Context, token, kind string, d *Decoded, del *delivery, deadline, first time.Time, ahead bool) (parkedAt, error) {
	m := nats.NewMsg(parkedSubject(token))
	m.Data = del.data
	for k, v := range del.header {
		if k != nats.MsgIdHdr {
			m.Header[k] = v
		}
	}
	m.Header.Set(hdrReceived, del.received.UTC().Format(time.RFC3339Nano))
	m.Header.Set(hdrSourceStream, del.stream)
	m.Header.Set(hdrSourceSeq, strconv.FormatUint(del.seq, 10))
	if id := del.header.Get(nats.MsgIdHdr); id != "" {
		m.Header.Set(hdrSourceMsgID, id)
	}
	// A redelivery of the same message parks it once; moving it from a hold to
	// its meeting is a new entry.
	m.Header.Set(nats.MsgIdHdr, "xygroup."+kindName(kind)+"."+del.stream+"."+strconv.FormatUint(del.seq, 10)+"."+strconv.Itoa(del.delivered))
	if del.kind == fromShared {
		m.Header.Set(nats.MsgIdHdr, "xygroup."+kindName(kind)+"."+del.stream+"."+strconv.FormatUint(del.seq, 10))
	}
	// A command taken from the commands stream must fit its tenant's share;
	// a copy moved within the parked stream is charged without the check,
	// its old copy given back once removed.
	cost := parkedBytes(del.data)
	if err := p.shares.reserve(ctx, d.EnterpriseID, cost, !del.parkedCopy()); err != nil {
		return parkedAt{}, fmt.Errorf("park: %w", err)
	}
	ack, err := p.js.PublishMsg(ctx, m)
	if err != nil || ack.Duplicate {
		// Not stored, or stored by an earlier delivery that was charged then.
		gctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		p.shares.giveBack(gctx, d.EnterpriseID, cost)
		cancel()
	}
	switch {
	case err == nil:
		p.fullAt.Store(0)
	case parkedFull(err):
		p.fullAt.Store(p.now().UnixNano())
	}
	if err != nil {
		return parkedAt{}, fmt.Errorf("park: %w", asStoreFull(StreamParked, err))
	}
	at := parkedAt{token: token, seq: ack.Sequence} // a duplicate's: the copy stored first
	if kind == kindLane {
		err = p.openLane(ctx, token, d)
	} else {
		at.next, err = p.schedule(ctx, token, kind, d, deadline, first, ahead)
	}
	if err != nil && parkedFull(err) {
		// The record that lets the copy out could not be written for lack
		// of room: the copy just stored would wait with nothing to let it
		// out (the command is refused, or tried again under a new Nats-Msg-Id),
		// so it is removed, and parking counts as full for lanes too.
		p.fullAt.Store(p.now().UnixNano())
		if !ack.Duplicate && p.parked != nil {
			gctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			if derr := p.parked.DeleteMsg(gctx, ack.Sequence); derr == nil {
				p.shares.giveBack(gctx, d.EnterpriseID, cost)
			}
			cancel()
		}
	}
	return at, err
}

func kindName(kind string) string {
	switch kind {
	case kindHold:
		return "hold"
	case kindLane:
		return "lane"
	}
	return "park"
}

// schedule creates the meeting's record, or moves its earliest deadline and
// next probe (to a notBefore) earlier (a hold's next probe: later) when this
// command needs that (the table's park rows). It writes the record on every park, after
// the command was stored: a forget that read the record before this write
// then fails (see prober.forget).
//
// ahead: the command waits only for its notBefore (first), which says nothing
// of the meeting: a record it creates is NotBeforeOnly, and it leaves a
// released meeting released.
func (p *parker) schedule(ctx context.Context, token, kind string, d *Decoded, deadline, first time.Time, ahead bool) (time.Time, error) {
	var seen *meetingRecord
	e, ok := p.view.get(token)
	if ok {
		seen = &e.rec
	}
	c := meetingChange{event: evPark, now: p.now(), kind: kind, enterpriseID: d.EnterpriseID, meeting: d.Cmd.MeetingRoomNumber,
		first: first, deadline: deadline, ahead: ahead}
	if nb := d.Cmd.NotBefore; nb != nil && nb.After(c.now) {
		c.notBefore = *nb
	}
	r, err := applyMeetingFrom(ctx, p.meetings, token, seen, e.rev, c)
	if err != nil {
		return time.Time{}, fmt.Errorf("meeting record: %w", err)
	}
	return r.NextProbeAt, nil
}

// waiting reports whether commands for the meeting should be parked without a
// call: the meeting is known to be waiting.
func (p *parker) waiting(enterpriseID, meeting string) (meetingRecord, bool) {
	e, ok := p.view.get(meetingToken(enterpriseID, meeting))
	return e.rec, ok && e.rec.State == meetingWaiting && !e.rec.NotBeforeOnly
}

// holding reports whether the tenant's commands are held (its breaker is open and
// the hold has not been released yet).
func (p *parker) holding(enterpriseID string) bool {
	e, ok := p.view.get(holdToken(enterpriseID))
	return ok && e.rec.State == meetingWaiting
}

// parkedCopyHeld reports whether the copy of the command its record names
// (where it was last parked) is still in the parked stream: then that copy
// ends the command. A copy taken since (let out, moved, ended) is not.
func (p *pipeline) parkedCopyHeld(ctx context.Context, d *Decoded) (bool, error) {
	rec, _, err := p.idem.get(ctx, d.ref())
	if err != nil || rec.ParkedSeq == 0 || rec.Terminal != nil || p.parker == nil || p.parker.parked == nil {
		return false, err
	}
	m, err := p.parker.parked.GetMsg(ctx, rec.ParkedSeq)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("parked copy %d: %w", rec.ParkedSeq, err)
	}
	if m.Subject != parkedSubject(rec.ParkedUnder) {
		return false, nil
	}
	del := parkedDelivery(m.Data, m.Header, 0, fromProbe, m.Sequence, m.Time)
	return p.decoder.decode(del.data, del.header, del.stream, del.seq, time.Time{}).ref() == d.ref(), nil
}
