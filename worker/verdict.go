package worker

import "time"

// verdictKind is what is done with a delivery after its pass through the
// pipeline: exactly one of these, each made by its constructor below.
type verdictKind int

const (
	doRetry     verdictKind = iota // try again after retry (a nak with that delay)
	doEnd                          // publish event (terminal), record it unless repeat, acknowledge
	doPark                         // park under its meeting, which waits; its first probe at parkFirst
	doParkAhead                    // park under its meeting until its notBefore (parkFirst); the meeting is not known to wait
	doHold                         // park in its tenant's hold (breaker open) until parkFirst
	doLane                         // move to its tenant's lane (crowded on this replica)
	doGiveBack                     // give it back to NATS at once (stopping: another replica takes it)
	doLeave                        // acknowledge only: a copy of the command waits in the parked stream and will end it
)

var verdictKindNames = [...]string{"retry", "end", "park", "park-ahead", "hold", "lane", "give-back", "leave"}

func (k verdictKind) String() string { return verdictKindNames[k] }

// verdict is what to do with a delivery after one pass through the pipeline:
// its kind, what that kind needs, and what the pass learned. The zero verdict
// is a step's "go on" (it is never applied).
type verdict struct {
	kind      verdictKind
	event     *outEvent     // doEnd: the terminal event (never nil then, nil otherwise)
	repeat    bool          // doEnd: the event was published before; this publishes it again
	record    *claim        // doEnd: the record as this call last wrote it (finish writes without reading)
	retry     time.Duration // doRetry: the delay
	parkFirst time.Time     // doPark, doParkAhead, doHold: when it may be tried again

	// What the pass learned, whatever the kind.
	waiting       bool // the meeting answered 66620
	meetingAnswer bool // the meeting answered (success or a business error): release its parked commands
	attempts      int
	deadline      time.Time
}

// retryIn tries the command again after d.
func retryIn(d time.Duration) verdict { return verdict{kind: doRetry, retry: d} }

// endWith publishes the command's terminal event, records it and settles it.
func endWith(ev *outEvent) verdict { return verdict{kind: doEnd, event: ev} }

// repeatEvent publishes a terminal event recorded before, again.
func repeatEvent(ev *outEvent) verdict { return verdict{kind: doEnd, event: ev, repeat: true} }

// endAfterCall is endWith for the outcome of this pass's own call: c is the
// record as the call last wrote it.
func endAfterCall(ev *outEvent, c *claim) verdict { return verdict{kind: doEnd, event: ev, record: c} }

// parkUnder parks the command under its waiting meeting, first probe at first.
func parkUnder(first time.Time, attempts int, deadline time.Time) verdict {
	return verdict{kind: doPark, parkFirst: first, attempts: attempts, deadline: deadline}
}

// parkUntilNotBefore parks the command until its notBefore; its meeting is
// not known to wait.
func parkUntilNotBefore(notBefore time.Time, attempts int, deadline time.Time) verdict {
	return verdict{kind: doParkAhead, parkFirst: notBefore, attempts: attempts, deadline: deadline}
}

// holdUntil parks the command in its tenant's hold until the breaker's probe.
func holdUntil(until time.Time, attempts int, deadline time.Time) verdict {
	return verdict{kind: doHold, parkFirst: until, attempts: attempts, deadline: deadline}
}

// toLane moves the command to its tenant's lane.
func toLane(attempts int, deadline time.Time) verdict {
	return verdict{kind: doLane, attempts: attempts, deadline: deadline}
}

// giveBack returns the delivery to NATS at once.
func giveBack() verdict { return verdict{kind: doGiveBack} }

// leaveToParkedCopy acknowledges a repeat of a command (published again, or
// delivered again after its park) whose copy waits in the parked stream: the
// copy ends the command, and the repeat takes no share of the stream.
func leaveToParkedCopy() verdict { return verdict{kind: doLeave} }

// parks: the command leaves the consumer it came from for the parked stream.
func (v verdict) parks() bool {
	return v.kind == doPark || v.kind == doParkAhead || v.kind == doHold || v.kind == doLane
}

// ends: the verdict publishes a terminal event.
func (v verdict) ends() bool { return v.kind == doEnd }

// learned keeps what an earlier verdict learned of the command (its calls,
// deadline and the meeting's answers) in v, of another kind.
func (v verdict) learned(from verdict) verdict {
	v.waiting, v.meetingAnswer, v.attempts, v.deadline = from.waiting, from.meetingAnswer, from.attempts, from.deadline
	return v
}
