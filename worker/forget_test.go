package worker

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/xygroup/xygroup/xylink"
)

// parkingParts is a parker and a prober on an embedded NATS server, with the
// parked stream and the meetings bucket, and no worker around them.
type parkingParts struct {
	js jetstream.JetStream
	p  *parker
	pr *prober
}

func startParkingParts(t *testing.T) *parkingParts {
	t.Helper()
	js := embeddedJS(t)
	ctx := context.Background()
	parked, err := js.CreateStream(ctx, StreamSettings{}.ParkedStream())
	if err != nil {
		t.Fatal(err)
	}
	meetings, err := js.CreateKeyValue(ctx, StreamSettings{}.meetingsBucket())
	if err != nil {
		t.Fatal(err)
	}
	p := &parker{js: js, parked: parked, meetings: meetings, view: &meetingView{meetings: map[string]meetingEntry{}},
		backoff: Backoff{Initial: time.Second, Max: 4 * time.Second}, now: time.Now}
	o := defaultOptions()
	return &parkingParts{js: js, p: p, pr: &prober{opts: &o, log: zerolog.Nop(), parker: p}}
}

// parkOne parks a command of the meeting whose deadline is deadline; seq
// tells the commands apart.
func (pp *parkingParts) parkOne(t *testing.T, meeting string, seq uint64, deadline time.Time) {
	t.Helper()
	d := &Decoded{ID: "c", EnterpriseID: "ent", MeetingRoomNumber: meeting, Cmd: &Command{CreateGroupsRequest: xylink.CreateGroupsRequest{MeetingRoomNumber: meeting}}}
	del := &delivery{data: []byte(`{"meetingRoomNumber":"` + meeting + `"}`), header: nats.Header{}, stream: StreamCommands,
		seq: seq, delivered: 1, received: time.Now(), kind: fromShared}
	if _, err := pp.p.park(context.Background(), d, del, deadline, time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
}

func (pp *parkingParts) parkedCount(t *testing.T, token string) uint64 {
	t.Helper()
	info, err := pp.p.parked.Info(context.Background(), jetstream.WithSubjectFilter(parkedSubject(token)))
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Subjects[parkedSubject(token)]
}

func (pp *parkingParts) hasRecord(t *testing.T, token string) bool {
	t.Helper()
	_, err := pp.p.meetings.Get(context.Background(), token)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return false
	}
	if err != nil {
		t.Fatal(err)
	}
	return true
}

// A forget leaves a meeting that has a parked command alone.
func TestForgetKeepsAMeetingWithParkedCommands(t *testing.T) {
	pp := startParkingParts(t)
	token := meetingToken("ent", "m-forget")
	pp.parkOne(t, "m-forget", 1, time.Now().Add(time.Hour))
	if pp.pr.forgetMeeting(context.Background(), token) {
		t.Error("forget reported the record deleted")
	}
	if !pp.hasRecord(t, token) {
		t.Fatalf("the meeting's record is gone while %d commands are parked under it", pp.parkedCount(t, token))
	}
}

// A command parked between a forget's check (the meeting had no parked
// command) and its delete keeps its record, even when its deadline is no
// earlier than the meeting's: the park wrote the record, so the delete at the
// revision the forget read fails.
func TestForgetRacingAParkKeepsTheRecord(t *testing.T) {
	pp := startParkingParts(t)
	token := meetingToken("ent", "m-race")
	pp.parkOne(t, "m-race", 1, time.Now().Add(time.Hour))
	// Its only command ends (as a probe's or a cancel's settle does): the
	// subject is empty, the record still there.
	if err := pp.p.parked.Purge(context.Background(), jetstream.WithPurgeSubject(parkedSubject(token))); err != nil {
		t.Fatal(err)
	}
	parkedMeanwhile := false
	pp.pr.forgetChecked = func(string) {
		pp.parkOne(t, "m-race", 2, time.Now().Add(2*time.Hour)) // a later deadline
		parkedMeanwhile = true
	}
	forgot := pp.pr.forgetMeeting(context.Background(), token)
	if !parkedMeanwhile {
		t.Fatal("the forget did not reach its delete")
	}
	if n := pp.parkedCount(t, token); n != 1 {
		t.Fatalf("%d commands parked, want 1", n)
	}
	if forgot || !pp.hasRecord(t, token) {
		t.Fatal("a command parked during the forget has no meeting record: no probe and no expiry will end it")
	}
}

// A meeting whose parked commands are all gone is forgotten.
func TestForgetDeletesAnEmptyMeeting(t *testing.T) {
	pp := startParkingParts(t)
	token := meetingToken("ent", "m-empty")
	pp.parkOne(t, "m-empty", 1, time.Now().Add(time.Hour))
	if err := pp.p.parked.Purge(context.Background(), jetstream.WithPurgeSubject(parkedSubject(token))); err != nil {
		t.Fatal(err)
	}
	if !pp.pr.forgetMeeting(context.Background(), token) || pp.hasRecord(t, token) {
		t.Fatal("the record of a meeting without parked commands was not deleted")
	}
}
