package contract_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/xygroup/xygroup/worker/contract"
	"github.com/xygroup/xygroup/worker/embedded"
)

func TestIdentityOf(t *testing.T) {
	for _, c := range []struct {
		in   string
		want contract.Identity
	}{
		{`{"commandId":"c1","enterpriseId":"e1","meetingRoomNumber":"9"}`, contract.Identity{CommandID: "c1", EnterpriseID: "e1", MeetingRoomNumber: "9"}},
		// A field of another type stays empty; the others are read.
		{`{"enterpriseId":5,"commandId":"c1"}`, contract.Identity{CommandID: "c1"}},
		{`{"commandId":7}`, contract.Identity{}},
		{`not json`, contract.Identity{}},
		{`["c1"]`, contract.Identity{}},
	} {
		if got := contract.IdentityOf([]byte(c.in)); got != c.want {
			t.Errorf("IdentityOf(%s) = %+v, want %+v", c.in, got, c.want)
		}
	}
}

func TestSubjects(t *testing.T) {
	for subj, failed := range map[string]bool{
		contract.SubjectFailed + ".rejected": true, contract.SubjectCreated: false,
		contract.SubjectWaiting: false, contract.SubjectFailed: false, contract.SubjectFailed + "x.y": false,
	} {
		if contract.IsFailed(subj) != failed {
			t.Errorf("IsFailed(%q) = %v", subj, !failed)
		}
		if contract.IsTerminal(subj) != (failed || subj == contract.SubjectCreated) {
			t.Errorf("IsTerminal(%q) wrong", subj)
		}
	}
}

func startJS(t *testing.T) jetstream.JetStream {
	t.Helper()
	s, err := embedded.Start(embedded.Config{Listen: "127.0.0.1:0", StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)
	nc, err := s.Connect()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: contract.StreamEvents,
		Subjects: []string{contract.SubjectCreated, contract.SubjectFailedAll, contract.SubjectWaiting}}); err != nil {
		t.Fatal(err)
	}
	return js
}

func TestReaderStoredThenStops(t *testing.T) {
	js := startJS(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for i, subj := range []string{contract.SubjectCreated, contract.SubjectWaiting, contract.SubjectFailed + ".rejected", contract.SubjectCreated} {
		body := fmt.Sprintf(`{"commandId":"c%d","enterpriseId":"e","class":"x","attempts":%d}`, i, i)
		if _, err := js.Publish(ctx, subj, []byte(body)); err != nil {
			t.Fatal(err)
		}
	}
	for _, batch := range []int{0, 500} {
		r, err := contract.NewReader(ctx, js, contract.ReadOptions{
			Subjects: []string{contract.SubjectCreated, contract.SubjectFailedAll}, StartSeq: 2, Batch: batch, Wait: 200 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for m, err := range r.Messages(ctx) {
			if err != nil {
				t.Fatal(err)
			}
			e, err := m.Event()
			if err != nil {
				t.Fatal(err)
			}
			if m.Meta() == nil || m.Meta().Sequence.Stream < 2 {
				t.Fatalf("message %s before the start", m.Data())
			}
			got = append(got, fmt.Sprintf("%s/%d", e.CommandID, e.Attempts))
		}
		if fmt.Sprint(got) != "[c2/2 c3/3]" {
			t.Errorf("batch %d: read %v, want [c2/2 c3/3]", batch, got)
		}
	}
}

func TestReaderFollowStopsWithContext(t *testing.T) {
	js := startJS(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r, err := contract.NewReader(ctx, js, contract.ReadOptions{Follow: true, Wait: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	fctx, stop := context.WithCancel(ctx)
	defer stop()
	go func() {
		_, _ = js.Publish(ctx, contract.SubjectWaiting, []byte(`{"commandId":"late"}`))
	}()
	var got []string
	var last error
	for m, err := range r.Messages(fctx) {
		if err != nil {
			last = err
			continue
		}
		got = append(got, m.Identity().CommandID)
		stop()
	}
	if fmt.Sprint(got) != "[late]" || !errors.Is(last, context.Canceled) {
		t.Fatalf("read %v, ended with %v", got, last)
	}
}

func TestNoStream(t *testing.T) {
	s, err := embedded.Start(embedded.Config{Listen: "127.0.0.1:0", StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)
	nc, err := s.Connect()
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	if _, err := contract.NewReader(context.Background(), js, contract.ReadOptions{}); !errors.Is(err, jetstream.ErrStreamNotFound) {
		t.Fatalf("NewReader without a stream: %v", err)
	}
}
