package worker_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/xygroup/xygroup/worker"
	wt "github.com/xygroup/xygroup/worker/workertest"
	"github.com/xygroup/xygroup/xylink/sandbox"
)

// TestStoreSizesPerCommand measures what one command costs each store, as
// JetStream counts it (the README's sizing table comes from its output: go
// test ./worker -run TestStoreSizesPerCommand -v): a typical command that is
// created, one parked until its notBefore, and the largest command there can
// be, which fails. It fails when a store takes more per command than its bound.
func TestStoreSizesPerCommand(t *testing.T) {
	srv := wt.StartNATS(t)
	js := wt.JetStream(t, wt.Connect(t, srv))
	sb := wt.StartSandbox(t, sandbox.Config{Rate: 1e6})
	wt.StartWorker(t, srv, wt.Client(t, sb))
	ctx := context.Background()
	stores := []string{worker.StreamCommands, worker.StreamEvents, worker.StreamParked,
		"KV_" + worker.BucketCommands, "KV_" + worker.BucketMeetings}
	for _, s := range stores {
		wt.AwaitStream(t, js, s)
	}
	bytesOf := func() map[string]uint64 {
		out := map[string]uint64{}
		for _, name := range stores {
			s, err := js.Stream(ctx, name)
			if err != nil {
				t.Fatal(err)
			}
			info, err := s.Info(ctx)
			if err != nil {
				t.Fatal(err)
			}
			out[name] = info.State.Bytes
		}
		return out
	}
	var table strings.Builder
	fmt.Fprintf(&table, "\n| command | %s |\n|---|%s\n", strings.Join(stores, " | "), strings.Repeat("---|", len(stores)))
	// measure runs publish, then reports each store's growth per command,
	// and checks it against the bounds.
	measure := func(what string, n int, publish func(), settled func() bool, bound map[string]uint64) {
		t.Helper()
		before := bytesOf()
		publish()
		wt.Eventually(t, time.Minute, settled, what+": settled")
		after := bytesOf()
		fmt.Fprintf(&table, "| %s |", what)
		for _, s := range stores {
			per := (after[s] - before[s]) / uint64(n)
			fmt.Fprintf(&table, " %d |", per)
			if b, ok := bound[s]; ok && per > b {
				t.Errorf("%s: %s takes %d bytes per command, more than %d", what, s, per, b)
			}
		}
		table.WriteString("\n")
	}
	terminal := func(n int) func() bool {
		return func() bool { return wt.TerminalCount(t, js) >= n }
	}
	recorded := func(n uint64) func() bool {
		return func() bool {
			s, err := js.Stream(ctx, "KV_"+worker.BucketCommands)
			if err != nil {
				return false
			}
			info, err := s.Info(ctx)
			return err == nil && info.State.Msgs >= n
		}
	}

	const n = 200
	cmd := wt.Command("c-000", "910004217404")
	measure(fmt.Sprintf("created, %d bytes", len(cmd)), n, func() {
		for i := range n {
			wt.Publish(t, js, "", wt.Command(fmt.Sprintf("c-%03d", i), "910004217404"))
		}
	}, func() bool { return terminal(n)() && recorded(n)() }, map[string]uint64{"KV_" + worker.BucketCommands: 2 << 10})

	notBefore := fmt.Sprintf("%q", time.Now().Add(time.Hour).UTC().Format(time.RFC3339))
	parked := func() bool {
		s, err := js.Stream(ctx, worker.StreamParked)
		if err != nil {
			return false
		}
		info, err := s.Info(ctx)
		return err == nil && info.State.Msgs >= n
	}
	measure(fmt.Sprintf("parked until its notBefore, one meeting each, %d bytes", len(wt.Command("p-000", "m-000", "notBefore", notBefore))), n, func() {
		for i := range n {
			wt.Publish(t, js, "", wt.Command(fmt.Sprintf("p-%03d", i), fmt.Sprintf("m-%03d", i), "notBefore", notBefore))
		}
	}, func() bool { return parked() && recorded(2*n)() }, nil)

	// The largest command the commands stream takes, which fails the schema:
	// its failed event quotes it whole; its record does not.
	big := []byte(`{"commandId":"big","meetingRoomNumber":"910004217404","junk":"` + strings.Repeat("<", worker.MaxCommandBytes-200) + `"}`)
	measure(fmt.Sprintf("failed, %d bytes (the command limit)", len(big)), 1, func() {
		wt.Publish(t, js, "", big)
	}, func() bool { return terminal(n+1)() && recorded(2*n+1)() }, map[string]uint64{
		"KV_" + worker.BucketCommands: 4 << 10,
		worker.StreamEvents:           worker.EventsMaxMsgBytes,
	})
	t.Log(table.String())
}
