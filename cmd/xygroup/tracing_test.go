package main

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/hex"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"

	"github.com/rs/zerolog"

	wt "github.com/xygroup/xygroup/worker/workertest"
	"github.com/xygroup/xygroup/xylink"
	"github.com/xygroup/xygroup/xylink/sandbox"
)

// otlpReceiver is an OTLP/HTTP trace receiver: it decodes each export as the
// protocol's ExportTraceServiceRequest and keeps it, with its raw bytes.
type otlpReceiver struct {
	*httptest.Server
	mu       sync.Mutex
	requests []*coltracepb.ExportTraceServiceRequest
	raw      [][]byte // decompressed
	gzipped  int
	bad      []string
}

func startReceiver(t *testing.T) *otlpReceiver {
	t.Helper()
	r := &otlpReceiver{}
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.Method != http.MethodPost || req.URL.Path != "/v1/traces" {
			r.fail(req.Method + " " + req.URL.Path)
			http.NotFound(w, req)
			return
		}
		var body io.Reader = req.Body
		gzipped := req.Header.Get("Content-Encoding") == "gzip"
		if gzipped {
			zr, err := gzip.NewReader(req.Body)
			if err != nil {
				r.fail("gzip: " + err.Error())
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			body = zr
		}
		raw, err := io.ReadAll(body)
		msg := &coltracepb.ExportTraceServiceRequest{}
		if err == nil {
			err = proto.Unmarshal(raw, msg)
		}
		if err != nil || req.Header.Get("Content-Type") != "application/x-protobuf" {
			r.fail("undecodable export: " + req.Header.Get("Content-Type"))
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		r.mu.Lock()
		r.requests, r.raw = append(r.requests, msg), append(r.raw, raw)
		if gzipped {
			r.gzipped++
		}
		r.mu.Unlock()
		out, _ := proto.Marshal(&coltracepb.ExportTraceServiceResponse{})
		w.Header().Set("Content-Type", "application/x-protobuf")
		_, _ = w.Write(out)
	}))
	t.Cleanup(r.Close)
	return r
}

func (r *otlpReceiver) fail(what string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.bad = append(r.bad, what)
}

// received is every span received so far, with its resource's attributes.
type receivedSpan struct {
	*tracepb.Span
	resource map[string]string
}

func (r *otlpReceiver) spans() []receivedSpan {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []receivedSpan
	for _, req := range r.requests {
		for _, rs := range req.ResourceSpans {
			res := kvMap(rs.GetResource().GetAttributes())
			for _, ss := range rs.ScopeSpans {
				for _, s := range ss.Spans {
					out = append(out, receivedSpan{s, res})
				}
			}
		}
	}
	return out
}

func kvMap(kvs []*commonpb.KeyValue) map[string]string {
	m := map[string]string{}
	for _, kv := range kvs {
		v := kv.GetValue()
		switch v.Value.(type) {
		case *commonpb.AnyValue_IntValue:
			m[kv.Key] = strconv.FormatInt(v.GetIntValue(), 10)
		default:
			m[kv.Key] = v.GetStringValue()
		}
	}
	return m
}

// clearOTEL unsets every OTEL_* variable for the test, restoring them after.
func clearOTEL(t *testing.T) {
	t.Helper()
	for _, kv := range os.Environ() {
		if name, _, _ := strings.Cut(kv, "="); strings.HasPrefix(name, "OTEL_") {
			t.Setenv(name, "") // restores it at cleanup
			_ = os.Unsetenv(name)
		}
	}
}

// runWorkerApp runs `xygroup worker` in this process, as the binary does,
// against srv and sb, until the returned stop (SIGTERM's path) returns.
func runWorkerApp(t *testing.T, natsURL string, sb *sandbox.Server) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, _, err := runApp(ctx, "worker", "--nats-url", natsURL, "--http-addr", freeAddr(t), "--log-level", "warn",
			"--xylink-base-url", sb.URL, "--enterprise-id", wt.Enterprise, "--token", wt.Token)
		done <- err
	}()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("worker: %v", err)
				}
			case <-time.After(60 * time.Second):
				t.Errorf("worker did not stop")
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

func terminalTraceparent(t *testing.T, events map[string][]wt.Event, id string) string {
	t.Helper()
	for _, e := range events[id] {
		if e.Terminal() {
			return e.Header.Get("traceparent")
		}
	}
	t.Fatalf("%s: no terminal event", id)
	return ""
}

// The worker, configured only through OTEL_* variables, exports its spans over
// OTLP/HTTP to a receiver: each command's span continues its publisher's trace,
// the steps and the HTTP request are below it, the attributes say what
// happened, the events name the command's span, and no secret is exported.
func TestTracesExportedToAnOTLPReceiver(t *testing.T) {
	clearOTEL(t)
	recv := startReceiver(t)
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", recv.URL)
	t.Setenv("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip")

	srv := wt.StartNATS(t)
	sb := wt.StartSandbox(t, sandbox.Config{Rate: 100000})
	if _, err := sb.AddMeeting(sandbox.MeetingSpec{Number: "m-reject",
		Fail: &sandbox.FixedAnswer{Status: 404, ErrorCode: 60404, UserMessage: "error.meeting.unknown"}}); err != nil {
		t.Fatal(err)
	}
	stop := runWorkerApp(t, srv.ClientURL(), sb)
	js := wt.JetStream(t, wt.Connect(t, srv))

	const traceID = "6bf92f3577b34da6a3ce929d0e0e4736"
	parents := map[string]string{"t-ok": "1111111111111111", "t-reject": "2222222222222222"}
	wt.Publish(t, js, "t-ok", wt.Command("t-ok", "m-ok"), "traceparent", "00-"+traceID+"-"+parents["t-ok"]+"-01")
	wt.Publish(t, js, "t-reject", wt.Command("t-reject", "m-reject"), "traceparent", "00-"+traceID+"-"+parents["t-reject"]+"-01")
	events := wt.AwaitTerminal(t, js, 2, time.Minute)
	stop() // as SIGTERM: the worker drains, then the provider flushes

	wantSteps := []string{"xygroup.idempotency", "xygroup.grant_wait", "xygroup.api_call", "xygroup.publish",
		"POST /api/rest/external/v1/" + xylink.DynamicGroupPath}
	commandOf := func(id string) *receivedSpan {
		for _, s := range recv.spans() {
			if s.Name == "xygroup.command" && kvMap(s.Attributes)["xygroup.command_id"] == id {
				return &s
			}
		}
		return nil
	}
	wt.Eventually(t, 30*time.Second, func() bool {
		return commandOf("t-ok") != nil && commandOf("t-reject") != nil && len(recv.spans()) >= 2*(1+len(wantSteps))
	}, "both commands' spans at the receiver")

	spans := recv.spans()
	byID := map[string]receivedSpan{}
	for _, s := range spans {
		byID[hex.EncodeToString(s.SpanId)] = s
		if got := hex.EncodeToString(s.TraceId); got != traceID {
			t.Errorf("span %s in trace %s, want the publisher's %s", s.Name, got, traceID)
		}
		if s.resource["service.name"] != "xygroup" {
			t.Errorf("span %s: service.name %q", s.Name, s.resource["service.name"])
		}
	}
	ancestry := func(s receivedSpan) []string {
		var names []string
		for p := hex.EncodeToString(s.ParentSpanId); p != ""; {
			ps, ok := byID[p]
			if !ok {
				names = append(names, "remote:"+p)
				break
			}
			names = append(names, ps.Name+":"+p)
			p = hex.EncodeToString(ps.ParentSpanId)
		}
		return names
	}
	for _, s := range spans {
		t.Logf("%-20s %-75s kind %-22s under %v", hex.EncodeToString(s.SpanId), s.Name, s.Kind, ancestry(s))
	}
	for id, parent := range parents {
		cmd := commandOf(id)
		cmdID := hex.EncodeToString(cmd.SpanId)
		if got := hex.EncodeToString(cmd.ParentSpanId); got != parent {
			t.Errorf("%s: command span's parent %s, want the publisher's span %s", id, got, parent)
		}
		attrs := kvMap(cmd.Attributes)
		if attrs["xygroup.enterprise_id"] != wt.Enterprise || attrs["xygroup.meeting_room_number"] == "" || attrs["xygroup.attempts"] != "1" {
			t.Errorf("%s: command span attributes %v", id, attrs)
		}
		failed := id == "t-reject"
		if failed != (attrs["xygroup.class"] == "rejected") || failed != (cmd.Status.GetCode() == tracepb.Status_STATUS_CODE_ERROR) {
			t.Errorf("%s: class %q, status %v", id, attrs["xygroup.class"], cmd.Status)
		}
		below := map[string]bool{}
		for _, s := range spans {
			for _, a := range ancestry(s) {
				if a == "xygroup.command:"+cmdID {
					below[s.Name] = true
					if strings.HasPrefix(s.Name, "POST ") && s.Kind != tracepb.Span_SPAN_KIND_CLIENT {
						t.Errorf("%s: HTTP span of kind %v", id, s.Kind)
					}
				}
			}
		}
		for _, name := range wantSteps {
			if !below[name] {
				t.Errorf("%s: no %s span under the command's (below it: %v)", id, name, below)
			}
		}
		tp := terminalTraceparent(t, events, id)
		if want := "00-" + traceID + "-" + cmdID + "-01"; tp != want {
			t.Errorf("%s: event traceparent %q, want the worker's command span %q", id, tp, want)
		}
	}

	recv.mu.Lock()
	defer recv.mu.Unlock()
	if len(recv.bad) > 0 || recv.gzipped == 0 {
		t.Errorf("receiver: %v; %d of %d exports gzipped", recv.bad, recv.gzipped, len(recv.raw))
	}
	for _, raw := range recv.raw {
		for _, secret := range []string{wt.Token, "signature", "enterpriseId="} {
			if bytes.Contains(raw, []byte(secret)) {
				t.Errorf("an export holds %q", secret)
			}
		}
	}
}

// Without OTEL_* configuration, or with tracing turned off by it, the worker
// exports nothing and its events carry the command's traceparent.
func TestNoTracesUnlessConfigured(t *testing.T) {
	cases := []struct {
		name string
		env  []string
	}{
		{"no variables", nil},
		{"OTEL_TRACES_EXPORTER=none", []string{"OTEL_TRACES_EXPORTER", "none"}},
		{"OTEL_SDK_DISABLED=true", []string{"OTEL_SDK_DISABLED", "true"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			clearOTEL(t)
			recv := startReceiver(t)
			if c.env != nil {
				t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", recv.URL)
				t.Setenv(c.env[0], c.env[1])
			}
			if tp, err := tracingFromEnv(context.Background(), nopLog); tp != nil || err != nil {
				t.Fatalf("tracingFromEnv: %v, %v; want no provider", tp, err)
			}
			srv := wt.StartNATS(t)
			sb := wt.StartSandbox(t, sandbox.Config{Rate: 100000})
			stop := runWorkerApp(t, srv.ClientURL(), sb)
			js := wt.JetStream(t, wt.Connect(t, srv))
			const traceparent = "00-7bf92f3577b34da6a3ce929d0e0e4736-3333333333333333-01"
			wt.Publish(t, js, "n-ok", wt.Command("n-ok", "m-ok"), "traceparent", traceparent)
			events := wt.AwaitTerminal(t, js, 1, time.Minute)
			stop()
			if tp := terminalTraceparent(t, events, "n-ok"); tp != traceparent {
				t.Errorf("event traceparent %q, want the command's %q", tp, traceparent)
			}
			recv.mu.Lock()
			defer recv.mu.Unlock()
			if len(recv.requests)+len(recv.bad) > 0 {
				t.Errorf("%d exports received", len(recv.requests)+len(recv.bad))
			}
		})
	}
}

// The OTEL_* variables that turn tracing on, and those the worker refuses.
func TestTracingFromEnv(t *testing.T) {
	cases := []struct {
		env     []string
		on, bad bool
	}{
		{env: nil},
		{env: []string{"OTEL_SERVICE_NAME", "x"}},
		{env: []string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://127.0.0.1:1/v1/traces"}, on: true},
		{env: []string{"OTEL_TRACES_EXPORTER", "otlp"}, on: true},
		{env: []string{"OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:1", "OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"}, on: true},
		{env: []string{"OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:1", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/protobuf",
			"OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"}, on: true},
		{env: []string{"OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:1", "OTEL_SDK_DISABLED", "TRUE"}},
		{env: []string{"OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:1", "OTEL_TRACES_EXPORTER", "otlp,none"}},
		{env: []string{"OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:1", "OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"}, bad: true},
		{env: []string{"OTEL_TRACES_EXPORTER", "zipkin"}, bad: true},
	}
	for _, c := range cases {
		t.Run(strings.Join(c.env, " "), func(t *testing.T) {
			clearOTEL(t)
			for i := 0; i+1 < len(c.env); i += 2 {
				t.Setenv(c.env[i], c.env[i+1])
			}
			tp, err := tracingFromEnv(context.Background(), nopLog)
			if (err != nil) != c.bad || (tp != nil) != c.on {
				t.Fatalf("provider %v, error %v; want on %v, refused %v", tp != nil, err, c.on, c.bad)
			}
			if tp != nil {
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				defer cancel()
				_ = tp.Shutdown(ctx)
			}
		})
	}
}

var nopLog = zerolog.Nop()
