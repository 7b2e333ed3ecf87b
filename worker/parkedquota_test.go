package worker_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/xygroup/xygroup/worker"
	wt "github.com/xygroup/xygroup/worker/workertest"
	"github.com/xygroup/xygroup/xylink"
	"github.com/xygroup/xygroup/xylink/sandbox"
)

// bigCommand is a valid manual-mode command of about members×50 bytes for
// enterprise ent, with extra fields as in wt.Command.
func bigCommand(id, ent, meeting string, members int, extra ...string) []byte {
	var groups []string
	for g := 0; members > 0; g++ {
		n := min(members, 1000)
		members -= n
		ms := make([]string, n)
		for i := range ms {
			ms[i] = fmt.Sprintf(`{"id":%d,"type":5,"participantNumber":"1896%07d"}`, g*1000+i+1, g*1000+i)
		}
		groups = append(groups, fmt.Sprintf(`{"groupName":"g%d","memberList":[%s]}`, g, strings.Join(ms, ",")))
	}
	fields := fmt.Sprintf(`"commandId":%q,"enterpriseId":%q,"meetingRoomNumber":%q,"mode":"manual","groupList":[%s]`, id, ent, meeting, strings.Join(groups, ","))
	for i := 0; i+1 < len(extra); i += 2 {
		fields += fmt.Sprintf(",%q:%s", extra[i], extra[i+1])
	}
	return []byte("{" + fields + "}")
}

func at(t time.Time) string { return fmt.Sprintf("%q", t.UTC().Format(time.RFC3339Nano)) }

func parkedMsgs(t *testing.T, js jetstream.JetStream) uint64 {
	t.Helper()
	s, err := js.Stream(context.Background(), worker.StreamParked)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs
}

// A notBefore or a deadline further ahead than the horizon fails the command
// as invalid_command, naming the field and the flag; nothing is parked.
func TestHorizonRefusesFarAhead(t *testing.T) {
	srv := wt.StartNATS(t)
	sb := wt.StartSandbox(t, sandbox.Config{Rate: 1e6})
	wt.StartWorker(t, srv, wt.Client(t, sb), worker.WithMaxHorizon(time.Hour))
	js := wt.JetStream(t, wt.Connect(t, srv))
	far := time.Now().Add(2 * time.Hour)
	wt.Publish(t, js, "far-nb", wt.Command("far-nb", "m-far", "notBefore", at(far)))
	wt.Publish(t, js, "far-dl", wt.Command("far-dl", "m-far", "deadline", at(far)))
	wt.Publish(t, js, "forever", wt.Command("forever", "m-far", "deadline", `"9999-12-31T23:59:59Z"`))
	evs := wt.AwaitTerminal(t, js, 3, time.Minute)
	for id, field := range map[string]string{"far-nb": "notBefore", "far-dl": "deadline", "forever": "deadline"} {
		var term []wt.Event
		for _, e := range evs[id] {
			if e.Terminal() {
				term = append(term, e)
			} else {
				t.Errorf("%s: a non-terminal event %s: it was parked", id, e.Subject)
			}
		}
		if len(term) != 1 || term[0].Subject != "xylink.groups.failed.invalid_command" {
			t.Fatalf("%s: terminal events %v, want one failed.invalid_command", id, evs[id])
		}
		dev, _ := term[0].Fields["developerMessage"].(string)
		user, _ := term[0].Fields["userMessage"].(string)
		if !strings.Contains(dev, field) || !strings.Contains(dev, "--max-horizon") || !strings.Contains(user, field) || !strings.Contains(user, "1h0m0s") {
			t.Errorf("%s: messages %q / %q, want the field %s, the horizon and the flag named", id, user, dev, field)
		}
	}
	if n := parkedMsgs(t, js); n != 0 {
		t.Errorf("%d commands parked, want none", n)
	}
	if n := len(sb.Requests()); n != 0 {
		t.Errorf("%d requests reached the API, want none", n)
	}
}

// A tenant whose parked commands hold its share of the parked stream gets
// its further commands that would park refused as over_quota, while another
// tenant parks as usual; once its parked commands left, its share is back.
func TestParkedTenantShare(t *testing.T) {
	const other = "other-ent"
	srv := wt.StartNATS(t)
	sb := wt.StartSandbox(t, sandbox.Config{Rate: 1e6, Enterprises: []sandbox.Enterprise{{ID: other, Token: "other-token"}}})
	c := wt.Client(t, sb, xylink.Credentials{EnterpriseID: other, Token: "other-token"})
	for _, m := range []sandbox.MeetingSpec{{Number: "m-flood"}, {Number: "m-other", EnterpriseID: other}, {Number: "m-again"}} {
		if _, err := sb.AddMeeting(m); err != nil {
			t.Fatal(err)
		}
	}
	// 4 MB of parked stream, 1 MB a tenant: four commands of ~200 KB fit.
	wt.StartWorker(t, srv, c, worker.WithStreams(worker.StreamSettings{CommandsMaxBytes: 4 << 20}),
		worker.WithParkedTenantShare(0.25))
	js := wt.JetStream(t, wt.Connect(t, srv))
	soon := time.Now().Add(20 * time.Second)
	const flood = 8
	for i := range flood {
		id := fmt.Sprintf("flood-%d", i)
		wt.Publish(t, js, id, bigCommand(id, wt.Enterprise, "m-flood", 4000, "notBefore", at(soon)))
	}
	wt.Publish(t, js, "other", bigCommand("other", other, "m-other", 4000, "notBefore", at(soon)))
	evs := wt.AwaitTerminal(t, js, flood-4, time.Minute) // the refused ones end at once
	over := 0
	for id, es := range evs {
		for _, e := range es {
			if e.Subject == "xylink.groups.failed.over_quota" {
				over++
				if id == "other" {
					t.Errorf("the other tenant's command failed over_quota")
				}
				user, _ := e.Fields["userMessage"].(string)
				dev, _ := e.Fields["developerMessage"].(string)
				if !strings.Contains(user, "share") || !strings.Contains(dev, "--parked-tenant-share") {
					t.Errorf("over_quota messages %q / %q name neither the share nor the flag", user, dev)
				}
			}
		}
	}
	if over < flood-4 || over == flood {
		t.Fatalf("%d of %d flooding commands failed over_quota, want all but the few that fit its share", over, flood)
	}
	// Every command ends in one terminal event: the parked ones once notBefore passed.
	all := wt.AwaitTerminal(t, js, flood+1, 2*time.Minute)
	for id, es := range all {
		n := 0
		for _, e := range es {
			if e.Terminal() {
				n++
			}
		}
		if n != 1 {
			t.Errorf("%s: %d terminal events: %v", id, n, es)
		}
	}
	var created int
	for _, es := range all {
		for _, e := range es {
			if e.Terminal() && e.Subject != "xylink.groups.failed.over_quota" {
				created++
			}
		}
	}
	if created != flood-over+1 {
		for id, es := range all {
			for _, e := range es {
				t.Logf("%s %s %v", id, e.Subject, e.Fields["developerMessage"])
			}
		}
		t.Errorf("%d ended otherwise than over_quota, want the %d parked", created, flood-over+1)
	}
	// The share is given back: the tenant parks again.
	wt.Eventually(t, time.Minute, func() bool { return parkedMsgs(t, js) == 0 }, "the parked stream empties")
	later := time.Now().Add(30 * time.Second)
	for i := range 4 {
		id := fmt.Sprintf("again-%d", i)
		wt.Publish(t, js, id, bigCommand(id, wt.Enterprise, "m-again", 4000, "notBefore", at(later)))
	}
	defer func() {
		if t.Failed() {
			for _, e := range wt.StoredEvents(t, js) {
				if strings.HasPrefix(e.CommandID(), "again-") {
					t.Logf("%s %s %v", e.CommandID(), e.Subject, e.Fields["developerMessage"])
				}
			}
		}
	}()
	wt.Eventually(t, time.Minute, func() bool { return parkedMsgs(t, js) == 4 }, "the tenant's four commands parked again")
	for _, e := range wt.StoredEvents(t, js) {
		if strings.HasPrefix(e.CommandID(), "again-") && e.Terminal() {
			t.Errorf("%s: %s after its share was given back", e.CommandID(), e.Subject)
		}
	}
}

// The horizon refuses a command at its first intake only: a command parked
// within it stays accepted when its copy is taken again under a horizon
// lowered since (an operator's change, an upgrade), and ends as it would have.
func TestHorizonOnlyAtIntake(t *testing.T) {
	srv := wt.StartNATS(t)
	sb := wt.StartSandbox(t, sandbox.Config{Rate: 1e6})
	if _, err := sb.AddMeeting(sandbox.MeetingSpec{Number: "m-lowered"}); err != nil {
		t.Fatal(err)
	}
	c := wt.Client(t, sb)
	first := wt.StartWorker(t, srv, c, worker.WithMaxHorizon(time.Hour))
	js := wt.JetStream(t, wt.Connect(t, srv))
	wt.AwaitStream(t, js, worker.StreamParked)
	nb := time.Now().Add(15 * time.Second)
	wt.Publish(t, js, "lowered", wt.Command("lowered", "m-lowered", "notBefore", at(nb), "deadline", at(nb.Add(10*time.Minute))))
	wt.Eventually(t, time.Minute, func() bool { return parkedMsgs(t, js) == 1 }, "the command parked")
	if err := first.Stop(); err != nil {
		t.Fatal(err)
	}
	// Its notBefore and deadline are now beyond the horizon from its arrival.
	wt.StartWorker(t, srv, c, worker.WithMaxHorizon(5*time.Second))
	evs := wt.AwaitTerminal(t, js, 1, 2*time.Minute)
	var term []string
	for _, e := range evs["lowered"] {
		if e.Terminal() {
			term = append(term, fmt.Sprintf("%s %v", e.Subject, e.Fields["developerMessage"]))
		}
	}
	if len(term) != 1 || !strings.HasPrefix(term[0], "xylink.groups.created") {
		t.Fatalf("terminal events %q, want one created: a parked command is not refused by a horizon lowered since", term)
	}
	// A new command beyond the lowered horizon is refused at intake.
	wt.Publish(t, js, "new-far", wt.Command("new-far", "m-lowered", "notBefore", at(time.Now().Add(time.Minute))))
	evs = wt.AwaitTerminal(t, js, 2, time.Minute)
	if es := evs["new-far"]; len(es) != 1 || es[0].Subject != "xylink.groups.failed.invalid_command" {
		t.Fatalf("new-far: %v, want one failed.invalid_command", es)
	}
}

// A parked copy removed twice (a probe and a cancel settling it at once) gives
// its bytes back to its tenant's share once, and the second removal, finding
// the copy gone, is done at once rather than retried until the ack wait.
func TestParkedShareGivenBackOnce(t *testing.T) {
	srv := wt.StartNATS(t)
	sb := wt.StartSandbox(t, sandbox.Config{Rate: 1e6})
	run := wt.StartWorker(t, srv, wt.Client(t, sb), worker.WithStreams(worker.StreamSettings{AckWait: 10 * time.Minute}))
	js := wt.JetStream(t, wt.Connect(t, srv))
	wt.AwaitStream(t, js, worker.StreamParked)
	later := time.Now().Add(10 * time.Minute)
	wt.Publish(t, js, "twice-1", wt.Command("twice-1", "m-twice", "notBefore", at(later)))
	wt.Publish(t, js, "twice-2", wt.Command("twice-2", "m-twice", "notBefore", at(later)))
	ctx := context.Background()
	wt.Eventually(t, time.Minute, func() bool {
		_, n, err := worker.ParkedShare(ctx, js, wt.Enterprise)
		return err == nil && n == 2 && parkedMsgs(t, js) == 2
	}, "two commands parked and counted")
	before, _, _ := worker.ParkedShare(ctx, js, wt.Enterprise)
	s, err := js.Stream(ctx, worker.StreamParked)
	if err != nil {
		t.Fatal(err)
	}
	first := s.CachedInfo().State.FirstSeq
	removed := make(chan error, 1)
	go func() { removed <- worker.RemoveParkedCopy(ctx, run.Worker, first, 2) }()
	select {
	case err := <-removed:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(2 * time.Minute):
		t.Fatal("the second removal of a copy already gone is still retried")
	}
	b, n, err := worker.ParkedShare(ctx, js, wt.Enterprise)
	if err != nil {
		t.Fatal(err)
	}
	if n != 1 || b != before/2 {
		t.Errorf("after one copy of two removed (twice): %d bytes in %d copies, want %d in 1", b, n, before/2)
	}
}
