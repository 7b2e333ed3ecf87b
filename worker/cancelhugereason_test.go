package worker_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/xygroup/xygroup/worker"
	"github.com/xygroup/xygroup/worker/commands"
	"github.com/xygroup/xygroup/worker/contract"
	wt "github.com/xygroup/xygroup/worker/workertest"
	"github.com/xygroup/xygroup/xylink/sandbox"
)

// A cancel whose reason is as long as NATS lets the cancel be is still carried
// out and answered: the parked command it names ends cancelled, the done one
// is answered cancel_rejected, and the cancels are settled. (The commands
// stream the worker creates refuses such a cancel to its publisher; this one
// has no per-message limit, as an operator's stream may not.)
func TestCancelWithHugeReason(t *testing.T) {
	srv := wt.StartNATS(t)
	sb := wt.StartSandbox(t, sandbox.Config{Rate: 1e6})
	c := wt.Client(t, sb)
	logs := &wt.SyncBuffer{}
	wt.StartWorker(t, srv, c, worker.WithProbeBackoff(worker.Backoff{Initial: time.Hour, Max: time.Hour}), worker.WithLogger(zerolog.New(logs)),
		worker.WithStreams(worker.StreamSettings{CommandsMaxMsgSize: -1}))
	defer func() {
		if t.Failed() {
			t.Log(cutLog(logs.String()))
		}
	}()
	nc := wt.Connect(t, srv)
	js := wt.JetStream(t, nc)
	wt.AwaitStream(t, js, worker.StreamCommands)
	wt.AwaitStream(t, js, worker.StreamEvents) // cancels are answered there
	if _, err := sb.AddMeeting(sandbox.MeetingSpec{Number: "m-parked", StartsIn: sandbox.Duration(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	wt.Publish(t, js, "done", wt.Command("done", "m-done"))
	wt.AwaitTerminal(t, js, 1, time.Minute)
	wt.Publish(t, js, "parked", wt.Command("parked", "m-parked"))
	awaitParked(t, js, 1)

	reason := strings.Repeat("r", int(nc.MaxPayload())-1024)
	at := time.Now()
	for _, tc := range []struct{ id, want string }{{"parked", subjectCancelled}, {"done", worker.SubjectCancelRejected}} {
		req := commands.CancelRequest{CommandID: tc.id, Reason: reason}
		id := cancel(t, js, req)
		ctx, stop := context.WithTimeout(context.Background(), 20*time.Second)
		out, err := commands.AwaitCancel(ctx, js, req, id, at, 0)
		stop()
		if err != nil || len(out) == 0 {
			t.Errorf("%s: no answer to a cancel with a %d-byte reason within 20s (%v)", tc.id, len(reason), err)
			continue
		}
		if out[0].Subject != tc.want {
			t.Errorf("%s: answered on %s, want %s", tc.id, out[0].Subject, tc.want)
		}
		if tc.want == worker.SubjectCancelRejected && out[0].Event.Reason != contract.RejectedDone {
			t.Errorf("%s: rejected as %q", tc.id, out[0].Event.Reason)
		}
	}
	wt.AwaitConsumerIdle(t, js, 20*time.Second)
}

// cutLog shortens each log line to its first 300 bytes.
func cutLog(s string) string {
	var b strings.Builder
	for _, l := range strings.Split(s, "\n") {
		if len(l) > 300 {
			l = l[:300] + "…"
		}
		b.WriteString(l + "\n")
	}
	return b.String()
}

// A cancel whose commandId and meetingRoomNumber are as long as NATS lets the
// cancel be is answered invalid, and settled (on a commands stream without a
// per-message limit, as in TestCancelWithHugeReason).
func TestCancelWithHugeIDsIsAnsweredInvalid(t *testing.T) {
	srv := wt.StartNATS(t)
	sb := wt.StartSandbox(t, sandbox.Config{Rate: 1e6})
	wt.StartWorker(t, srv, wt.Client(t, sb), worker.WithStreams(worker.StreamSettings{CommandsMaxMsgSize: -1}))
	nc := wt.Connect(t, srv)
	js := wt.JetStream(t, nc)
	wt.AwaitStream(t, js, worker.StreamCommands)
	wt.AwaitStream(t, js, worker.StreamEvents) // cancels are answered there
	long := strings.Repeat("x", int(nc.MaxPayload())/2-1024)
	body := []byte(`{"commandId":"` + long + `","meetingRoomNumber":"` + long + `"}`)
	at := time.Now()
	wt.PublishOn(t, js, worker.SubjectCancel, "cancel-huge-ids", body)
	ctx, stop := context.WithTimeout(context.Background(), 20*time.Second)
	defer stop()
	out, err := commands.AwaitCancel(ctx, js, commands.CancelRequest{MeetingRoomNumber: "m"}, "cancel-huge-ids", at, 0)
	if err != nil || len(out) == 0 {
		t.Fatalf("no answer to a cancel with %d-byte ids within 20s (%v)", len(long), err)
	}
	if out[0].Subject != worker.SubjectCancelRejected || out[0].Event.Reason != contract.RejectedInvalid {
		t.Errorf("answered on %s as %q", out[0].Subject, out[0].Event.Reason)
	}
	wt.AwaitConsumerIdle(t, js, 20*time.Second)
}
