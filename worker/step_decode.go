package worker

import (
	"context"
	"time"

	"github.com/rs/zerolog"

	"github.com/xygroup/xygroup/worker/contract"
	"github.com/xygroup/xygroup/xylink"
)

// stepDecode decodes and validates the command, names it in the log and sets
// its deadline. An invalid command fails, unless a copy of it that is done or
// in flight speaks for it.
func (p *pipeline) stepDecode(ctx context.Context, a *attempt) (verdict, bool) {
	del, log := a.del, a.log
	base := *log
	d := p.decoder.decode(del.data, del.header, del.stream, del.seq, intakeHorizon(del))
	*log = commandLogger(base, d)
	d.ReplayID = del.replayMark(log)
	if d.namedByReplay && d.ReplayID == "" {
		// The replay mark does not count here, nor does the name it gave.
		d = p.decoder.decode(del.data, del.header, del.stream, del.seq, intakeHorizon(del))
		*log = commandLogger(base, d)
	}
	a.d = d
	now := p.now()
	a.now = now
	if d.Invalid != nil {
		// A copy of a command that is done, or whose call is in flight, shares
		// its record and its terminal Nats-Msg-Id: it must not state an outcome
		// of its own over the command's.
		rec, _, err := p.idem.get(ctx, d.ref())
		if err != nil {
			log.Warn().Err(err).Msg("idempotency record unreadable; retrying")
			return retryIn(time.Second), true
		}
		switch {
		case rec.Terminal != nil && d.ReplayID == "":
			return repeatEvent(rec.Terminal.repeatFor(d)), true
		case rec.state(now) == stateClaimed || rec.state(now) == stateSent:
			return retryIn(min(max(rec.PendingUntil.Sub(now), 100*time.Millisecond), time.Second)), true // its call ends well before
		case d.Invalid.BeyondHorizon && rec.accepted():
			// Accepted before (a horizon lowered since, a worker before an
			// upgrade): never refused later.
			a.d = p.decoder.decode(del.data, del.header, del.stream, del.seq, time.Time{})
			a.d.ReplayID = d.ReplayID
			a.deadline = p.deadlineOf(a.d, del)
			return verdict{}, false
		}
		log.Warn().Str("reason", d.Invalid.DeveloperMessage).Msg("invalid command")
		return endWith(failedEvent(d, failure{class: xylink.ClassInvalidCommand,
			userMessage: d.Invalid.UserMessage, developerMessage: d.Invalid.DeveloperMessage}, 0, now)), true
	}
	a.deadline = p.deadlineOf(d, del)
	return verdict{}, false
}

// intakeHorizon is when the horizon on notBefore and deadline is counted from
// for this delivery: its arrival in the commands stream, for every delivery
// from it (a first one, or one given back unread by a stopping replica).
// Parked and lane copies carry a command that was accepted, which a horizon
// lowered since, or a worker before an upgrade that did not check, must not
// drop (zero: not checked); a delivery from the commands stream of a command
// its record shows accepted is not refused either (stepDecode).
func intakeHorizon(del *delivery) time.Time {
	if del.kind != fromShared {
		return time.Time{}
	}
	return del.received
}

// commandLogger names the command in every line: its id, tenant and meeting
// (as far as an invalid command gives them).
func commandLogger(log zerolog.Logger, d *Decoded) zerolog.Logger {
	l := log.With().Str("commandId", d.ID).Str("enterpriseId", d.EnterpriseID)
	if d.MeetingRoomNumber != "" {
		l = l.Str("meetingRoomNumber", d.MeetingRoomNumber)
	}
	return l.Logger()
}

// deadlineOf is when the command stops being tried: its own deadline, or
// maxWait after it may first be called (it arrived, or its notBefore passed,
// whichever is later); for a replay, the replay's deadline, or maxWait after
// the replay's copy may first be called.
func (p *pipeline) deadlineOf(d *Decoded, del *delivery) time.Time {
	if d.ReplayID != "" {
		// A replay asks for a new try: the command's own deadline is the one
		// that ended it.
		if t, err := time.Parse(time.RFC3339Nano, del.header.Get(contract.HeaderReplayDeadline)); err == nil {
			if h := p.decoder.maxHorizon; h > 0 && t.After(del.received.Add(h)) {
				t = del.received.Add(h) // a replay's copy is held no longer than a command
			}
			return t
		}
		return waitFrom(d, del).Add(p.maxWait)
	}
	if d.Cmd != nil && d.Cmd.Deadline != nil {
		return *d.Cmd.Deadline
	}
	return waitFrom(d, del).Add(p.maxWait)
}

// waitFrom is when the command starts to wait for its meeting: when it
// arrived, or its notBefore when that is later (a command scheduled ahead
// waits its maximum wait from the scheduled start).
func waitFrom(d *Decoded, del *delivery) time.Time {
	if d.Cmd != nil && d.Cmd.NotBefore != nil && d.Cmd.NotBefore.After(del.received) {
		return *d.Cmd.NotBefore
	}
	return del.received
}
