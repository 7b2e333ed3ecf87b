package worker

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/rs/zerolog"
)

// A durable reader of the events stream that falls behind is measured, and
// warned about when its oldest unread event nears eviction by bytes, and when
// the stream dropped it unread; a reader that keeps up is not.
func TestEventsReaderNearEvictionIsReported(t *testing.T) {
	js := embeddedJS(t)
	ctx := context.Background()
	cfg := StreamSettings{EventsMaxBytes: 64 << 10}.EventsStream()
	if _, err := js.CreateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"events-slow", "events-fast"} {
		if _, err := js.CreateConsumer(ctx, StreamEvents, jetstream.ConsumerConfig{Durable: name, AckPolicy: jetstream.AckExplicitPolicy}); err != nil {
			t.Fatal(err)
		}
	}
	publish := func(n int) {
		for range n {
			if _, err := js.Publish(ctx, SubjectCreated, bytes.Repeat([]byte("e"), 1000)); err != nil {
				t.Fatal(err)
			}
		}
	}
	keepUp := func() {
		c, err := js.Consumer(ctx, StreamEvents, "events-fast")
		if err != nil {
			t.Fatal(err)
		}
		for {
			info, err := c.Info(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if info.NumPending == 0 && info.NumAckPending == 0 {
				return
			}
			b, err := c.Fetch(100, jetstream.FetchMaxWait(time.Second))
			if err != nil {
				t.Fatal(err)
			}
			for m := range b.Messages() {
				if err := m.DoubleAck(ctx); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	m := newEventsRiskMetrics(prometheus.NewRegistry(), cfg)
	warned := map[string]time.Time{}
	var logs bytes.Buffer
	check := func(at time.Time) map[string]readerRisk {
		t.Helper()
		c, risks, err := readersAtRisk(ctx, js, at)
		if err != nil {
			t.Fatal(err)
		}
		noteEventsRisk(m, c, risks, warned, at, zerolog.New(&logs))
		out := map[string]readerRisk{}
		for _, r := range risks {
			out[r.consumer] = r
		}
		return out
	}

	publish(20) // about a third of the stream
	keepUp()
	now := time.Now()
	r := check(now)
	if r["events-slow"].unread != 20 || r["events-slow"].near(cfg) || r["events-fast"].unread != 0 {
		t.Fatalf("a third full: %+v", r)
	}
	if logs.Len() != 0 || testutil.ToFloat64(m.atRisk) != 0 || testutil.ToFloat64(m.bytesLeft) < 0.5*float64(cfg.MaxBytes) {
		t.Fatalf("at risk with room left: %v readers, %v bytes left; %s", testutil.ToFloat64(m.atRisk), testutil.ToFloat64(m.bytesLeft), logs.String())
	}
	publish(40) // nearly full: the slow reader's first unread goes with the next few events
	keepUp()
	r = check(now.Add(time.Second))
	if !r["events-slow"].near(cfg) || r["events-fast"].near(cfg) {
		t.Fatalf("nearly full: %+v", r)
	}
	if got := testutil.ToFloat64(m.bytesLeft); got <= 0 || got > 0.1*float64(cfg.MaxBytes) {
		t.Fatalf("bytes left %v", got)
	}
	if got := testutil.ToFloat64(m.atRisk); got != 1 {
		t.Fatalf("%v readers at risk, want 1", got)
	}
	if !strings.Contains(logs.String(), "near losing unread events") || strings.Contains(logs.String(), "events-fast") {
		t.Fatalf("warnings: %s", logs.String())
	}
	// Once per reader in eventsRiskLogEvery, however often it is measured.
	before := logs.Len()
	check(now.Add(2 * time.Second))
	if logs.Len() != before {
		t.Fatalf("warned again at once: %s", logs.String()[before:])
	}
	publish(30) // the stream drops the slow reader's oldest unread events
	keepUp()
	r = check(now.Add(eventsRiskLogEvery + 3*time.Second))
	if !r["events-slow"].lost {
		t.Fatalf("evicted unread events not seen: %+v", r)
	}
	if !strings.Contains(logs.String(), "lost unread events") {
		t.Fatalf("warnings: %s", logs.String())
	}
}
