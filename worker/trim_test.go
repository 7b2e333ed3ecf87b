package worker

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
)

// The trim of a full commands stream purges only below the shared consumer's
// ack floor as it was at least the trim's lag ago: a command that is not
// acknowledged stays, and so do the commands acknowledged after it, and the
// ones acknowledged within the lag (a cancel that read an older floor may
// still look for them above it).
func TestTrimStaysBelowTheLaggedAckFloor(t *testing.T) {
	js := embeddedJS(t)
	ctx := context.Background()
	cons, err := Setup(ctx, js, StreamSettings{CommandsMaxBytes: 16 << 10}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	var n uint64
	for ; ; n++ {
		if _, err := js.Publish(ctx, SubjectCreate, fmt.Appendf(nil, `{"commandId":"c-%03d","pad":"%0200d"}`, n, 0)); err != nil {
			break // full
		}
	}
	// Acknowledged: the first half but the fifth; then all the rest but one.
	batch, err := cons.Fetch(int(n), jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	var msgs []jetstream.Msg
	for m := range batch.Messages() {
		msgs = append(msgs, m)
	}
	if uint64(len(msgs)) != n {
		t.Fatalf("fetched %d of %d", len(msgs), n)
	}
	ack := func(from, to int) {
		for _, m := range msgs[from:to] {
			if err := m.DoubleAck(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}
	ack(0, 4)
	ack(5, len(msgs)/2)

	now := time.Now()
	tr := &historyTrimmer{js: js, lag: time.Minute, now: func() time.Time { return now }, log: zerolog.Nop()}
	first := func() uint64 {
		s, err := js.Stream(ctx, StreamCommands)
		if err != nil {
			t.Fatal(err)
		}
		return s.CachedInfo().State.FirstSeq
	}
	// No floor is a minute old yet: nothing goes.
	if purged, err := tr.trim(ctx); err != nil || purged != 0 || first() != 1 {
		t.Fatalf("trimmed %d (%v) with no floor older than the lag; first sequence %d", purged, err, first())
	}
	// A minute later the floor read then (4) bounds the trim, whatever was acknowledged since.
	now = now.Add(time.Minute)
	ack(4, 5)
	if purged, err := tr.trim(ctx); err != nil || purged != 4 || first() != 5 {
		t.Fatalf("trimmed %d (%v), first sequence %d; want 4 trimmed, the first not acknowledged then (5) kept", purged, err, first())
	}
	// The floor read a minute ago is now past half: the trim goes down to 70%
	// of the limit or the floor, whichever comes first, never past it.
	now = now.Add(time.Minute)
	if _, err := tr.trim(ctx); err != nil {
		t.Fatal(err)
	}
	floor := uint64(len(msgs) / 2)
	if got := first(); got > floor+1 || got <= 5 {
		t.Fatalf("first sequence %d after a trim bounded by the ack floor %d", got, floor)
	}
	t.Logf("%d commands fill 16 KiB; after the trims the stream starts at %d (ack floor %d)", n, first(), floor)
}
