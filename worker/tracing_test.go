package worker_test

import (
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/xygroup/xygroup/worker"
	wt "github.com/xygroup/xygroup/worker/workertest"
	"github.com/xygroup/xygroup/xylink"
	"github.com/xygroup/xygroup/xylink/sandbox"
)

// With a tracer provider, each delivery has a span in the publisher's trace,
// its steps and the HTTP request below it, the outcome in its attributes, and
// the events name it in their traceparent. A command already done, delivered
// again, has the recorded outcome on its span.
func TestCommandSpans(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	srv := wt.StartNATS(t)
	sb := wt.StartSandbox(t, sandbox.Config{Rate: 100000})
	if _, err := sb.AddMeeting(sandbox.MeetingSpec{Number: "m-reject",
		Fail: &sandbox.FixedAnswer{Status: 404, ErrorCode: 60404, UserMessage: "error.meeting.unknown"}}); err != nil {
		t.Fatal(err)
	}
	c, err := xylink.NewClient(sb.URL, xylink.WithTenants(xylink.Credentials{EnterpriseID: wt.Enterprise, Token: wt.Token}),
		xylink.WithTracerProvider(tp))
	if err != nil {
		t.Fatal(err)
	}
	wt.StartWorker(t, srv, c, worker.WithTracerProvider(tp))
	js := wt.JetStream(t, wt.Connect(t, srv))

	const traceID, parentID = "5bf92f3577b34da6a3ce929d0e0e4736", "10f067aa0ba902b7"
	traceparent := "00-" + traceID + "-" + parentID + "-01"
	wt.Publish(t, js, "c-ok", wt.Command("c-ok", "m-ok"), "traceparent", traceparent)
	wt.Publish(t, js, "c-reject", wt.Command("c-reject", "m-reject"), "traceparent", traceparent)
	events := wt.AwaitTerminal(t, js, 2, time.Minute)
	wt.Publish(t, js, "c-reject-again", wt.Command("c-reject", "m-reject"), "traceparent", traceparent)
	wt.Eventually(t, 30*time.Second, func() bool { return len(commandSpans(rec, "c-reject")) == 2 }, "the repeated command's span")

	byID := map[trace.SpanID]sdktrace.ReadOnlySpan{}
	for _, s := range rec.Ended() {
		byID[s.SpanContext().SpanID()] = s
	}
	under := func(s sdktrace.ReadOnlySpan, root trace.SpanID) bool {
		for p := s.Parent().SpanID(); p.IsValid(); {
			if p == root {
				return true
			}
			ps, ok := byID[p]
			if !ok {
				return false
			}
			p = ps.Parent().SpanID()
		}
		return false
	}
	for _, id := range []string{"c-ok", "c-reject"} {
		spans := commandSpans(rec, id)
		if len(spans) == 0 {
			t.Fatalf("%s: no command span", id)
		}
		cmd := spans[0]
		if cmd.SpanContext().TraceID().String() != traceID || cmd.Parent().SpanID().String() != parentID || !cmd.Parent().IsRemote() {
			t.Errorf("%s: span in trace %s under %s, want the publisher's %s under %s", id, cmd.SpanContext().TraceID(), cmd.Parent().SpanID(), traceID, parentID)
		}
		attrs := attrMap(cmd.Attributes())
		if attrs["xygroup.enterprise_id"] != wt.Enterprise || attrs["xygroup.attempts"] != "1" || attrs["xygroup.meeting_room_number"] == "" {
			t.Errorf("%s: attributes %v", id, attrs)
		}
		wantClass, wantStatus := "", codes.Unset
		if id == "c-reject" {
			wantClass, wantStatus = "rejected", codes.Error
		}
		if attrs["xygroup.class"] != wantClass || cmd.Status().Code != wantStatus {
			t.Errorf("%s: class %q, status %v; want %q, %v", id, attrs["xygroup.class"], cmd.Status().Code, wantClass, wantStatus)
		}
		steps := map[string]bool{}
		for _, s := range rec.Ended() {
			if under(s, cmd.SpanContext().SpanID()) {
				steps[s.Name()] = true
			}
		}
		for _, name := range []string{"xygroup.idempotency", "xygroup.grant_wait", "xygroup.mark_sent", "xygroup.api_call", "xygroup.publish",
			"POST /api/rest/external/v1/" + xylink.DynamicGroupPath} {
			if !steps[name] {
				t.Errorf("%s: no %s span under the command's: %v", id, name, steps)
			}
		}
		var tp string
		for _, e := range events[id] {
			if e.Terminal() {
				tp = e.Header.Get("traceparent")
			}
		}
		if want := "00-" + traceID + "-" + cmd.SpanContext().SpanID().String() + "-01"; tp != want {
			t.Errorf("%s: event traceparent %q, want the command span's %q", id, tp, want)
		}
	}
	again := commandSpans(rec, "c-reject")[1]
	if a := attrMap(again.Attributes()); a["xygroup.class"] != "rejected" || a["xygroup.attempts"] != "1" || again.Status().Code != codes.Error {
		t.Errorf("the repeated command: attributes %v, status %v", a, again.Status())
	}
}

// commandSpans are the command spans of a commandId, oldest first.
func commandSpans(rec *tracetest.SpanRecorder, id string) []sdktrace.ReadOnlySpan {
	var out []sdktrace.ReadOnlySpan
	for _, s := range rec.Ended() {
		if s.Name() == "xygroup.command" && attrMap(s.Attributes())["xygroup.command_id"] == id {
			out = append(out, s)
		}
	}
	return out
}

func attrMap(kvs []attribute.KeyValue) map[string]string {
	m := map[string]string{}
	for _, kv := range kvs {
		m[string(kv.Key)] = kv.Value.Emit()
	}
	return m
}
