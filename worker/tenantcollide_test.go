package worker_test

import (
	"testing"

	"time"

	"github.com/rs/zerolog"

	"github.com/xygroup/xygroup/worker"
	wt "github.com/xygroup/xygroup/worker/workertest"
	"github.com/xygroup/xygroup/xylink/sandbox"
)

// The hashed key of a (tenant, command) pair that is not made of key tokens
// must not be another pair's. A commandId may hold any character but spaces,
// NUL included, and an enterpriseId any character: an invalid command (here,
// of an unknown enterprise "<tenant>\0x") with commandId "y" ends with its
// failure recorded, and must not take the record of the tenant's command
// "x\0y".
func TestHashedKeysOfTwoPairsDoNotCollide(t *testing.T) {
	srv := wt.StartNATS(t)
	sb := wt.StartSandbox(t, sandbox.Config{Rate: 1e6})
	var logs wt.SyncBuffer
	wt.StartWorker(t, srv, wt.Client(t, sb), worker.WithLogger(zerolog.New(&logs)))
	defer func() {
		if t.Failed() {
			t.Log(logs.String())
		}
	}()
	js := wt.JetStream(t, wt.Connect(t, srv))
	wt.AwaitStream(t, js, worker.StreamCommands)
	wt.Publish(t, js, "intruder", []byte(`{"commandId":"y","enterpriseId":"`+wt.Enterprise+`\u0000x","meetingRoomNumber":"910000000031","groupCount":2}`))
	wt.AwaitConsumerIdle(t, js, 20*time.Second)
	wt.Publish(t, js, "legit", []byte(`{"commandId":"x\u0000y","enterpriseId":"`+wt.Enterprise+`","meetingRoomNumber":"910000000032","groupCount":2}`))
	// Its outcome: created (a second terminal event), or the intruder's failure repeated.
	wt.AwaitConsumerIdle(t, js, 20*time.Second)
	if st := sb.Stats(); st.Requests != 1 {
		t.Fatalf("the tenant's command x\\0y was not sent (%d API requests, %d terminal events): it met the record of another pair's invalid command",
			st.Requests, wt.TerminalCount(t, js))
	}
}
