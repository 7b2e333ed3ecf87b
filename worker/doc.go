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
//	                     before each request: the grant, one per API request, from
//	                     the cluster-wide limiter (package ratelimit), and a second
//	                     breaker check
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
// and drains on shutdown; slots.go counts its slots and their shares. Beside
// it, in the background of every replica (background.go, driven by the
// meetings bucket): the prober (probe.go) probes waiting meetings and held
// tenants, the releaser (release.go) lets out the commands of a released
// meeting or hold, lanes.go serves tenant lanes (laneshare.go shares them
// among the replicas, within each one's cap), and replicas.go keeps the
// replicas' heartbeats. Every write of a meetings bucket record (a waiting
// meeting's, a hold's, a lane's) is a row of one table (meetingstate.go).
// Every delivery, whatever its source, is settled the same way (Worker.apply).
//
// Words used with one meaning each:
//
//	park      store a command in XYGROUP_PARKED, acknowledged, until its meeting
//	          starts (a waiting meeting), its tenant's breaker closes (a hold:
//	          stored with kind "breaker" in the meetings bucket), or its
//	          tenant's lane takes it (a lane)
//	probe     one call for a waiting meeting or a held tenant, to learn whether
//	          it may go on
//	release   a meeting or hold whose probe answered: its parked commands may go
//	let out   take a released meeting's or hold's parked commands through the
//	          pipeline (every replica helps)
//	serve     take a lane's commands in order at the tenant's pace (one replica
//	          at a time, the lane's owner)
//	give back return a delivery to NATS at once (a nak), so that another
//	          replica takes it: what a stopping replica does
//	drain     the shutdown: stop pulling, let what is in flight finish within
//	          the drain timeout, give back the rest
package worker
