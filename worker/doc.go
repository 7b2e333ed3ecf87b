// Package worker takes "create breakout groups" commands from NATS JetStream
// through a limiter and a circuit breaker to XYLink's API, and publishes one
// terminal event per command.
//
// The pipeline is a row of small steps, each in its own file and composed in one
// place (pipeline.go):
//
//	decode.go    raw message → Command, or an invalid_command failure
//	limiter.go   one grant per API request (interface; per-replica x/time/rate here)
//	breaker.go   stop calling a failing tenant: a gobreaker per replica, whose
//	             opening sharedbreaker.go shares across replicas
//	             call and classify: xylink.Client and xylink.Classify; the grant and
//	             a second breaker check are taken in the client's gate
//	             (xylink.BeforeEachRequest), the last step before each request
//	decide.go    outcome → terminal event, or a retry after a backoff
//	events.go    event bodies, CloudEvents headers, derived Nats-Msg-Id
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
