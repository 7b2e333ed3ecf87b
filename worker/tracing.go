package worker

import (
	"context"
	"encoding/json"
	"strings"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// tracerName names the worker's instrumentation.
const tracerName = "github.com/xygroup/xygroup/worker"

// Span names.
const (
	spanCommand     = "xygroup.command"     // one delivery of a command, from intake to settling
	spanIdempotency = "xygroup.idempotency" // reading the command's record
	spanGrantWait   = "xygroup.grant_wait"  // waiting for the lane's turn and the rate-limit grant
	spanMarkSent    = "xygroup.mark_sent"   // the record says the request is out, before it leaves
	spanAPICall     = "xygroup.api_call"    // the XYLink call, app token and gate included
	spanPublish     = "xygroup.publish"     // storing an event
)

// Attributes of the command span.
const (
	attrCommandID     = attribute.Key("xygroup.command_id")
	attrEnterpriseID  = attribute.Key("xygroup.enterprise_id")
	attrMeeting       = attribute.Key("xygroup.meeting_room_number")
	attrClass         = attribute.Key("xygroup.class")    // the failed event's class
	attrAttempts      = attribute.Key("xygroup.attempts") // calls for the command so far
	attrOutcome       = attribute.Key("xygroup.outcome")  // what this delivery ended in
	attrDelivery      = attribute.Key("xygroup.delivery") // where the command came from
	attrReplayID      = attribute.Key("xygroup.replay_id")
	attrPriority      = attribute.Key("xygroup.priority")
	attrAnswer        = attribute.Key("xygroup.answer") // ok, an errorCode, an HTTP status, transport, ...
	attrRecord        = attribute.Key("xygroup.record") // what the command's record said at intake
	attrMessagingSys  = attribute.Key("messaging.system")
	attrMessagingDest = attribute.Key("messaging.destination.name")
)

// traceContext is W3C trace context: commands name their publisher's span in
// a traceparent header, and events name the worker's.
var traceContext = propagation.TraceContext{}

// natsCarrier reads and writes trace headers of a NATS message by their exact
// names, as NATS headers are case-sensitive.
type natsCarrier nats.Header

func (c natsCarrier) Get(key string) string { return nats.Header(c).Get(key) }
func (c natsCarrier) Set(key, value string) { nats.Header(c).Set(key, value) }
func (c natsCarrier) Keys() []string {
	keys := make([]string, 0, len(c))
	for k := range c {
		keys = append(keys, k)
	}
	return keys
}

func (k deliveryKind) String() string {
	switch k {
	case fromShared:
		return "shared"
	case fromProbe:
		return "probe"
	case fromReleased:
		return "released"
	case fromLane:
		return "lane"
	}
	return "unknown"
}

// startCommand starts the span of one delivery of a command, in the trace its
// traceparent header names (a new trace without one). End it once the
// delivery is settled.
func (w *Worker) startCommand(ctx context.Context, del *delivery) (context.Context, trace.Span) {
	if !w.tracing {
		return ctx, noop.Span{} // no tracing: nothing to read or start
	}
	ctx = traceContext.Extract(ctx, natsCarrier(del.header))
	attrs := []attribute.KeyValue{attrMessagingSys.String("nats"), attrDelivery.String(del.kind.String())}
	if del.subject != "" {
		attrs = append(attrs, attrMessagingDest.String(del.subject))
	}
	return w.p.tracer.Start(ctx, spanCommand, trace.WithSpanKind(trace.SpanKindConsumer), trace.WithAttributes(attrs...))
}

// eventTraceparent is the traceparent an event of this delivery carries: the
// command span's while tracing, else the command's own.
func (w *Worker) eventTraceparent(ctx context.Context, del *delivery) string {
	if w.tracing && trace.SpanContextFromContext(ctx).IsValid() {
		h := natsCarrier{}
		traceContext.Inject(ctx, h)
		return h.Get("traceparent")
	}
	return del.header.Get("traceparent")
}

// noteVerdict records on the command span what the delivery came to; a
// failed event sets its status to an error.
func noteVerdict(span trace.Span, v verdict, d *Decoded) {
	if !span.IsRecording() {
		return
	}
	if d != nil {
		span.SetAttributes(attrCommandID.String(d.ID), attrEnterpriseID.String(d.EnterpriseID), attrMeeting.String(d.MeetingRoomNumber))
		if d.ReplayID != "" {
			span.SetAttributes(attrReplayID.String(d.ReplayID))
		}
	}
	outcome := "retry"
	attempts := v.attempts
	switch v.kind {
	case doGiveBack:
		outcome = "given_back"
	case doLeave:
		outcome = "left_to_parked_copy"
	case doEnd:
		var class string
		outcome, class, attempts = eventOutcome(v.event)
		if class != "" {
			span.SetAttributes(attrClass.String(class))
			span.SetStatus(codes.Error, class)
		}
	case doLane:
		outcome = "lane"
	case doHold:
		outcome = "held"
	case doPark, doParkAhead:
		outcome = "waiting"
	}
	span.SetAttributes(attrOutcome.String(outcome), attrAttempts.Int(attempts))
}

// eventOutcome reads a terminal event's outcome, class and attempts, whether
// built by this delivery or read back from the command's record.
func eventOutcome(ev *outEvent) (outcome, class string, attempts int) {
	switch body := ev.body.(type) {
	case *CreatedEvent:
		return "created", "", body.Attempts
	case *FailedEvent:
		return "failed", string(body.Class), body.Attempts
	case rawBody:
		var b struct {
			Class    string `json:"class"`
			Attempts int    `json:"attempts"`
		}
		_ = json.Unmarshal(body, &b)
		if strings.HasPrefix(ev.subject, SubjectFailed) {
			return "failed", b.Class, b.Attempts
		}
		return "created", "", b.Attempts
	}
	return "event", "", 0
}

// endSpan ends a step's span, an error status naming what went wrong (never
// the error's text, which could quote an answer).
func endSpan(span trace.Span, failed bool, why string) {
	if failed {
		span.SetStatus(codes.Error, why)
	}
	span.End()
}
