package worker

import (
	"maps"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/xygroup/xygroup/worker/contract"
)

// deliveryKind says where a command came from.
type deliveryKind int

const (
	fromShared   deliveryKind = iota // the shared consumer: live commands, replays and their retries
	fromProbe                        // a parked command tried as its meeting's probe
	fromReleased                     // a parked command whose meeting was released
	fromLane                         // a command of a crowded tenant, taken from its lane at the tenant's pace
)

// delivery is one handling of a command, whatever its source.
type delivery struct {
	data      []byte
	header    nats.Header
	subject   string    // the subject it was published on (shared deliveries only)
	stream    string    // the commands stream the command first arrived on
	seq       uint64    // its sequence there
	delivered int       // deliveries of this message so far, this one included
	received  time.Time // when it first arrived
	kind      deliveryKind
	// turn orders a lane's commands on this replica: the command asks for its
	// grant once its predecessor has one (lane deliveries only).
	turn *laneTurn
	// intakeTurn orders a shared delivery's intake among its tenant's on this
	// replica: going straight, to the lane, or parked.
	intakeTurn *laneTurn
	// laneLeave takes a lane command out of its tenant's count in this
	// replica's pipeline (lane deliveries only).
	laneLeave func()
}

// intake: the command comes in for the first time, from the shared consumer
// or from its tenant's lane. It may be parked (meeting waiting) or held
// (breaker open) rather than tried.
// parkedCopy: the delivery is a copy in the parked stream (its ack removes
// it from there), not a command taken from the commands stream.
func (del *delivery) parkedCopy() bool { return del.kind != fromShared }

func (del *delivery) intake() bool { return del.kind == fromShared || del.kind == fromLane }

func sharedDelivery(msg jetstream.Msg, meta *jetstream.MsgMetadata) *delivery {
	return &delivery{data: msg.Data(), header: msg.Headers(), subject: msg.Subject(), stream: meta.Stream, seq: meta.Sequence.Stream,
		delivered: int(meta.NumDelivered), received: meta.Timestamp, kind: fromShared}
}

// replayMark keeps a delivery's replay mark (HeaderReplay) only where it can be
// trusted, since NATS does not say who published a message: on SubjectReplay,
// which only users allowed to replay may publish, and on a parked command,
// which only the worker writes, with the mark it honoured. A shared delivery
// on any other subject loses the mark, and the worker says so; one on
// SubjectReplay without it is a plain command, said too.
func (del *delivery) replayMark(log *zerolog.Logger) string {
	rid := del.header.Get(HeaderReplay)
	if del.kind != fromShared {
		return rid
	}
	switch {
	case del.subject == SubjectReplay && rid == "":
		log.Warn().Str("subject", del.subject).
			Msg("command on " + SubjectReplay + " without a " + HeaderReplay + " header: handled as a plain command, not as a replay")
	case del.subject != SubjectReplay && rid != "":
		log.Warn().Str("subject", del.subject).Str("replayId", rid).
			Msg("replay mark ignored: replays come on " + SubjectReplay + "; handled as a plain command")
		h := maps.Clone(del.header) // the message's own headers stay as they are
		h.Del(HeaderReplay)
		h.Del(contract.HeaderReplayCommandID)
		del.header, rid = h, ""
	}
	return rid
}

// parkedDelivery restores a parked command's origin from the headers park wrote.
// A message parked by something else lacks them: its origin is then its place in
// the parked stream (parkedSeq, stored at parkedAt), so that it has an id of its own.
func parkedDelivery(data []byte, h nats.Header, delivered int, kind deliveryKind, parkedSeq uint64, parkedAt time.Time) *delivery {
	d := &delivery{data: data, header: nats.Header{}, stream: h.Get(hdrSourceStream), delivered: delivered, kind: kind}
	for k, v := range h {
		switch k {
		case hdrReceived, hdrSourceStream, hdrSourceSeq, hdrSourceMsgID, nats.MsgIdHdr:
		default:
			d.header[k] = v
		}
	}
	if id := h.Get(hdrSourceMsgID); id != "" {
		d.header.Set(nats.MsgIdHdr, id)
	}
	d.seq, _ = strconv.ParseUint(h.Get(hdrSourceSeq), 10, 64)
	if d.stream == "" || d.seq == 0 {
		d.stream, d.seq = StreamParked, parkedSeq
	}
	var err error
	if d.received, err = time.Parse(time.RFC3339Nano, h.Get(hdrReceived)); err != nil {
		d.received = parkedAt
	}
	return d
}
