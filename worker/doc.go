// Package worker takes "create breakout groups" commands from NATS JetStream
// through a limiter and a circuit breaker to XYLink's API, and publishes one
// terminal event per command.
//
// The pipeline is a row of small steps, each in its own file and composed in one
// place (pipeline.go, in process's order):
//
//	step_decode.go       raw message → Command (decode.go), or an invalid_command failure
//	step_idempotency.go  a command with a recorded outcome is not sent again
//	step_park.go         parked until notBefore or while its meeting waits; one call
//	                     per meeting at a time; the tenant's hold while it is open
//	step_lane.go         a crowded tenant's commands go to its lane (lanes.go)
//	step_breaker.go      stop calling a failing tenant: a gobreaker per replica
//	                     (breaker.go), whose opening sharedbreaker.go shares across replicas
//	step_inflight.go     the call marked in flight in the command's record
//	step_grant.go        the client's gate (xylink.BeforeEachRequest), the last step
//	                     before each request: the grant, one per API request
//	                     (limiter.go; interface, per-replica x/time/rate here), and a
//	                     second breaker check
//	step_call.go         call and classify: xylink.Client and xylink.Classify
//	decide.go            outcome → terminal event, or a retry after a backoff
//	events.go            event bodies, CloudEvents headers, derived Nats-Msg-Id
//	tracing.go           a span per delivery (WithTracerProvider) in the trace its
//	                     traceparent names, and the traceparent its events carry
//
// The names publishers and readers share (subjects, streams, headers, the event
// envelope) and the one reader of the streams are in package contract; the
// idempotency records' key scheme and their read side for tools in package
// record. Neither imports anything of this project, so that publishers and
// tools (package commands) do not build the worker into themselves.
//
// worker.go consumes with bounded concurrency, keeps long waits alive with
// InProgress, acknowledges a command only after its event was stored (PubAck),
// and drains on shutdown: it stops pulling, finishes what is in flight within a
// bound and releases the rest to other replicas.
package worker
