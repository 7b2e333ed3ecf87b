package worker

import (
	"context"
	"sync"
	"time"

	"github.com/rs/zerolog"
	"go.opentelemetry.io/otel/trace"

	"github.com/xygroup/xygroup/worker/contract"
	"github.com/xygroup/xygroup/worker/ratelimit"
	"github.com/xygroup/xygroup/xylink"
)

// Caller makes the API call; *xylink.Client is one. The pipeline passes
// xylink.BeforeEachRequest: the rate-limit grant and the breaker's check happen
// in it, immediately before each request.
type Caller interface {
	CreateGroups(ctx context.Context, enterpriseID string, req *xylink.CreateGroupsRequest, opts ...xylink.CallOption) ([]xylink.Group, error)
}

// HeaderReplay marks a command re-published by `xygroup replay`: it yields to
// live commands, and a failed one is tried again once per replay. It counts
// only on SubjectReplay (see delivery.replayMark).
const HeaderReplay = contract.HeaderReplay

// pipeline composes the steps; each step's logic lives in its own file.
type pipeline struct {
	decoder *decoder
	caller  Caller
	limiter Limiter
	breaker *SharedBreaker // set in Start, with the breakers bucket
	idem    *idempotency
	parker  *parker
	gate    *meetingGate
	lanes   *lanes // nil: no lanes (every command goes straight)
	backoff Backoff
	maxWait time.Duration
	metrics *Metrics
	now     func() time.Time
	tracer  trace.Tracer
	full    *fullStores // stores that refused writes for lack of room

	mu      sync.Mutex
	stopped map[string]string // tenants whose credentials were refused → why
}

// step is one of a command's steps. It either stops the command there, with
// the verdict, or leaves it to the next step.
type step func(*pipeline, context.Context, *attempt) (v verdict, stop bool)

// steps: a command's steps in the README's order ("The worker"), each in its
// own file; the numbers are the README's.
var steps = [...]step{
	(*pipeline).stepDecode,      // step_decode.go      1. decode and validate
	(*pipeline).stepIdempotency, // step_idempotency.go 2. idempotency
	(*pipeline).stepPark,        // step_park.go        3. parking; the tenant's hold while it is open
	(*pipeline).stepLane,        // step_lane.go        tenant lanes
	(*pipeline).stepBreaker,     // step_breaker.go     4. breaker
	(*pipeline).stepInFlight,    // step_inflight.go    the record says a call is in flight
	(*pipeline).stepGrant,       // step_grant.go       5. limiter, and the breaker again: the gate before each request
	(*pipeline).stepCall,        // step_call.go        6. call and classify
}

// process runs one delivery of a command through the steps and says what to do
// with it.
func (p *pipeline) process(ctx context.Context, del *delivery, log *zerolog.Logger) (verdict, *Decoded) {
	a := &attempt{del: del, log: log}
	defer a.finish()
	for _, s := range steps {
		if v, stop := s(p, ctx, a); stop {
			return p.unlessCancelled(ctx, a, v), a.d
		}
	}
	return p.stepDecide(a), a.d // decide.go 7. decide
}

// attempt is one delivery's pass through the steps: what the steps learn, for
// the steps after them, and what they hold until the verdict.
type attempt struct {
	del *delivery
	log *zerolog.Logger

	d        *Decoded
	now      time.Time // when it was decoded: the steps before the call decide at this time
	deadline time.Time
	rec      commandRecord // the command's record as read at intake, at recRev
	recRev   uint64

	done          func(xylink.Outcome) // tells the breaker the call's outcome
	halfOpenProbe bool                 // the call is the tenant's one half-open probe

	before   commandRecord // the record before the call was marked in flight
	claimed  claim         // the call's claim on the record, as last written
	attempts int           // calls for the command, this one included

	gate      func(context.Context) error // run by the client immediately before each request
	departure ratelimit.Departure         // the last grant's departure window (see stepGrant)
	atWrite   func() error                // run by the client right before a request's first byte
	letGo     int                         // requests the gate let go, less those refused at their write
	sentAt    time.Time                   // when the last request was let go

	groups   []xylink.Group
	callErr  error
	outcome  xylink.Outcome
	terminal bool

	held []func()
}

// onDone keeps what a step took (the meeting's gate, a place in the tenant's
// pipeline, a lane turn) until process returns: finish gives it back then.
func (a *attempt) onDone(giveBack func()) { a.held = append(a.held, giveBack) }

// finish gives back what the steps hold, the last taken first, each as a
// deferred call of its own.
func (a *attempt) finish() {
	for _, f := range a.held {
		defer f()
	}
}
