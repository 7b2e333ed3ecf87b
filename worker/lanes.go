package worker

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"math"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
)

// Lanes keep tenants from taking each other's throughput. A command waiting
// for its tenant's rate-limit grant holds one of the replica's slots; without
// lanes, the slots fill with the commands of whichever tenant is slowest (a
// small rate, a big backlog) and the other tenants wait for slots.
//
// A tenant is crowded on a replica when its commands in the replica's pipeline
// (waiting for a grant or calling) reach its share of what its budget serves in
// the next laneAhead. A shared delivery of a crowded tenant, or of a tenant
// whose lane holds commands (so that the tenant's order is kept), is moved to
// the tenant's lane: stored in XYGROUP_PARKED under the lane's subject (store
// before ack, as parking does), then acknowledged. It then holds no slot.
//
// One replica at a time serves a lane (it holds the lane record's lease in the
// meetings bucket; another takes over when it lapses, or when it is handed
// over: see laneshare.go for which replica serves which), taking commands only
// while the tenant has fewer than laneAhead's worth of them in its pipeline
// (while the tenant's commands are held, they join the hold). Lane commands
// ask for their grants in lane order. When the lane is empty, its record is
// deleted with compare-and-swap, and looked at again: a command moved in
// meanwhile reopens it. New commands then go straight through again.
const (
	lanePrefix = "xygroup-lane-"
	laneLease  = 5 * time.Second
	laneAhead  = 2 * time.Second
)

// laneTurn lets a lane command ask for its grant after its predecessor.
type laneTurn struct {
	after <-chan struct{}
	done  func()
}

// lanes counts each tenant's commands in this replica's pipeline, and the
// lane commands in flight on it.
type lanes struct {
	rateOf   func(string) float64
	view     *meetingView
	replicas func() int
	// known says whether an enterprise is configured: only those have state
	// here. A command of another enterprise fails as invalid, in any order.
	known func(string) bool
	// maxHandlers bounds the lane commands in flight on this replica.
	maxHandlers int

	mu           sync.Mutex
	inPipe       map[string]int
	handlers     int             // lane commands in flight
	mostHandlers int             // the most at once (tests)
	gauged       map[string]bool // enterprises with a lane gauge set
	// Per tenant, the last turn given while it is not done: intake (a shared
	// delivery decides whether it goes straight or to the lane once its
	// predecessor did) and grant (a command asks for its grant once its
	// predecessor has one). A tenant whose last turn is done has no entry:
	// its next turn need not wait.
	intakeTurns, grantTurns map[string]<-chan struct{}
}

// nextTurn chains a turn after the last one of the tenant; l.mu is held.
func (l *lanes) nextTurn(last map[string]<-chan struct{}, ent string) *laneTurn {
	after, ok := last[ent]
	if !ok {
		after = doneTurn
	}
	next := make(chan struct{})
	last[ent] = next
	return &laneTurn{after: after, done: sync.OnceFunc(func() {
		close(next)
		l.mu.Lock()
		defer l.mu.Unlock()
		if last[ent] == (<-chan struct{})(next) {
			delete(last, ent) // no turn after it: the tenant's entry is idle
		}
	})}
}

// doneTurn is the predecessor of a tenant's first turn.
var doneTurn = func() <-chan struct{} {
	c := make(chan struct{})
	close(c)
	return c
}()

// intakeTurn is a shared delivery's place among its tenant's on this
// replica; nil for an enterprise that is not configured.
func (l *lanes) intakeTurn(ent string) *laneTurn {
	if l.known != nil && !l.known(ent) {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.nextTurn(l.intakeTurns, ent)
}

func (l *lanes) grantTurn(ent string) *laneTurn {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.nextTurn(l.grantTurns, ent)
}

func newLanes(rateOf func(string) float64, view *meetingView, replicas func() int, known func(string) bool, maxHandlers int) *lanes {
	return &lanes{rateOf: rateOf, view: view, replicas: replicas, known: known, maxHandlers: maxHandlers,
		inPipe: map[string]int{}, gauged: map[string]bool{},
		intakeTurns: map[string]<-chan struct{}{}, grantTurns: map[string]<-chan struct{}{}}
}

// sizes is how many tenants have state here (tests).
func (l *lanes) sizes() (inPipe, intake, grant, gauged int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.inPipe), len(l.intakeTurns), len(l.grantTurns), len(l.gauged)
}

// budget is what the tenant's rate serves in laneAhead: the most a lane's
// owner keeps in its pipeline.
func (l *lanes) budget(ent string) int {
	return max(2, int(math.Ceil(l.rateOf(ent)*laneAhead.Seconds())))
}

// share is this replica's part of the budget for commands going straight.
func (l *lanes) share(ent string) int {
	return max(2, int(math.Ceil(l.rateOf(ent)*laneAhead.Seconds()/float64(max(1, l.replicas())))))
}

// laning: the tenant's lane is open (it holds commands, or did a moment ago).
func (l *lanes) laning(ent string) bool {
	e, ok := l.view.get(laneToken(ent))
	return ok && e.rec.State == laneOpen
}

// admit takes a shared delivery into the pipeline (leave when it is done; it
// asks for its grant in turn), or says it goes to the tenant's lane.
func (l *lanes) admit(ent string) (leave func(), turn *laneTurn, lane bool) {
	if l.laning(ent) {
		return nil, nil, true
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.inPipe[ent] >= l.share(ent) {
		return nil, nil, true
	}
	l.inPipe[ent]++
	return l.leaver(ent), l.nextTurn(l.grantTurns, ent), false
}

// enter takes a shared delivery into the pipeline whatever the tenant's
// share: it cannot go to the tenant's lane.
func (l *lanes) enter(ent string) (leave func(), turn *laneTurn) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.inPipe[ent]++
	return l.leaver(ent), l.nextTurn(l.grantTurns, ent)
}

// peekEnterprise reads a command's tenant without decoding it (its intake
// turn); a command that is no JSON gets the default's.
func peekEnterprise(data []byte, def string) string {
	var peek struct {
		EnterpriseID string `json:"enterpriseId"`
	}
	_ = json.Unmarshal(data, &peek)
	if peek.EnterpriseID == "" {
		return def
	}
	return peek.EnterpriseID
}

// reserve takes up to the tenant's budget less what it has in the pipeline,
// at most most, and no more than the replica's lane handlers left: each is a
// lane command's handler (end it with handlerDone, or unreserve what was not
// fetched).
func (l *lanes) reserve(ent string, most int) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := min(l.budget(ent)-l.inPipe[ent], most, l.maxHandlers-l.handlers)
	if n <= 0 {
		return 0
	}
	l.inPipe[ent] += n
	l.handlers += n
	l.mostHandlers = max(l.mostHandlers, l.handlers)
	return n
}

// unreserve returns what reserve took and no command used.
func (l *lanes) unreserve(ent string, n int) {
	if n <= 0 {
		return
	}
	l.giveBack(ent, n)
	l.mu.Lock()
	l.handlers -= n
	l.mu.Unlock()
}

// handlerDone ends a lane command's handler.
func (l *lanes) handlerDone() {
	l.mu.Lock()
	l.handlers--
	l.mu.Unlock()
}

func (l *lanes) giveBack(ent string, n int) {
	if n <= 0 {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.inPipe[ent] -= n
	if l.inPipe[ent] <= 0 {
		delete(l.inPipe, ent)
	}
}

// join counts a command in the tenant's pipeline, whatever its share; the
// returned func takes it out again.
func (l *lanes) join(ent string) (leave func()) {
	l.mu.Lock()
	l.inPipe[ent]++
	l.mu.Unlock()
	return l.leaver(ent)
}

func (l *lanes) leaver(ent string) func() {
	return sync.OnceFunc(func() { l.giveBack(ent, 1) })
}

// tracker counts handlers that must end before Run returns; once closed it
// takes no more.
type tracker struct {
	mu     sync.Mutex
	n      int
	closed bool
	zero   chan struct{}
}

func (t *tracker) add() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return false
	}
	t.n++
	return true
}

func (t *tracker) done() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.n--
	if t.n == 0 && t.zero != nil {
		close(t.zero)
		t.zero = nil
	}
}

func (t *tracker) closeAndWait() {
	t.mu.Lock()
	t.closed = true
	if t.n == 0 {
		t.mu.Unlock()
		return
	}
	ch := make(chan struct{})
	t.zero = ch
	t.mu.Unlock()
	<-ch
}

func replicaID(source string) string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return source + "/" + hex.EncodeToString(b[:])
}

func laneConsumer(token string) jetstream.ConsumerConfig {
	return parkedConsumer(lanePrefix+token, "xygroup: commands of a crowded tenant, taken at its pace", token, 1024)
}

// openLane makes sure the lane has a record once a command was stored in it.
// It reads the record rather than trusting the view: a lane closing right now
// either sees the command (it looks again after deleting its record) or is
// gone, and the record is created anew.
func (p *parker) openLane(ctx context.Context, token string, d *Decoded) error {
	_, err := applyMeeting(ctx, p.meetings, token, meetingChange{event: evLaneOpen, now: p.now(), kind: kindLane, enterpriseID: d.EnterpriseID})
	if refused(err) {
		return nil // it has its record
	}
	return err
}

// serveLaneRecord is the prober's part: the lane's owner keeps serving it; a
// lane whose lease lapsed (or was given up) is claimed while this replica
// serves fewer lanes than target (see laneshare.go).
func (w *Worker) serveLaneRecord(ctx context.Context, token string, e meetingEntry, now time.Time, target int) {
	if w.served.serving(token) {
		return
	}
	if e.rec.Owner != w.id && e.rec.Owner != "" && now.Before(e.rec.LeaseUntil) {
		return // another replica serves it
	}
	sl := w.served.take(token, target, now)
	if sl == nil {
		if e.rec.Owner == w.id {
			w.leaveLane(ctx, token) // its own but beyond its share: another takes it
		}
		return
	}
	if e.rec.Owner != w.id {
		if _, err := applyMeetingAt(ctx, w.meetings, token, &e.rec, e.rev,
			meetingChange{event: evLaneOwn, now: now, replica: w.id, lease: now.Add(laneLease)}); err != nil {
			w.served.drop(token, false, now)
			return // another replica owns it, or took it first
		}
	}
	if !w.laneServers.add() {
		w.served.drop(token, false, now)
		w.leaveLane(ctx, token)
		return // stopping
	}
	go func() {
		handedOver := false
		defer w.laneServers.done()
		defer func() { w.served.drop(token, handedOver, w.opts.now()) }()
		defer func() {
			if r := recover(); r != nil {
				w.log.Error().Interface("panic", r).Str("lane", token).Msg("serving the lane panicked")
			}
		}()
		handedOver = w.serveLane(ctx, token, e.rec.EnterpriseID, sl)
	}()
}

// renewLane extends this replica's lease; a record gone while the lane is
// not known to be empty is created again. It reports whether the lane is
// still this replica's.
func (w *Worker) renewLane(ctx context.Context, token, ent string) bool {
	rctx, cancel := recordCtx(ctx)
	defer cancel()
	now := w.opts.now()
	_, err := applyMeeting(rctx, w.meetings, token, meetingChange{event: evLaneRenew, now: now, kind: kindLane, enterpriseID: ent,
		replica: w.id, lease: now.Add(laneLease)})
	return err == nil
}

// leaveLane gives the lease up, so that another replica takes the lane at once.
func (w *Worker) leaveLane(ctx context.Context, token string) {
	rctx, cancel := recordCtx(ctx)
	defer cancel()
	_, _ = applyMeeting(rctx, w.meetings, token, meetingChange{event: evLaneLeave, now: w.opts.now(), replica: w.id})
}

// serveLane takes the lane's commands at the tenant's pace until the lane is
// empty (then closes it), the lease is lost, the lane is handed over (it
// reports so), or ctx ends.
func (w *Worker) serveLane(ctx context.Context, token, ent string, sl *servedLane) (handedOver bool) {
	log := w.log.With().Str("lane", token).Str("enterpriseId", ent).Logger()
	cfg := laneConsumer(token)
	cons, err := w.js.CreateConsumer(ctx, StreamParked, cfg)
	if errors.Is(err, jetstream.ErrConsumerExists) {
		cons, err = w.js.Consumer(ctx, StreamParked, cfg.Durable)
	}
	if err != nil {
		if ctx.Err() == nil {
			log.Warn().Err(err).Msg("lane consumer")
		}
		w.leaveLane(ctx, token)
		return false
	}
	closed := false
	defer func() {
		if !closed {
			w.leaveLane(ctx, token)
		}
	}()
	var renewed time.Time
	for ctx.Err() == nil {
		if time.Since(renewed) > time.Second {
			if !w.renewLane(ctx, token, ent) {
				return false
			}
			renewed = time.Now()
		}
		if sl.leave.Load() {
			w.awaitDecided(ctx, token, ent, sl)
			log.Debug().Msg("lane handed over to another replica")
			return true
		}
		// A held tenant's lane goes on: its commands join the hold, in order,
		// where their deadlines are kept (a frozen lane would keep them past
		// their deadlines for as long as the hold lasts: refused credentials
		// may last for hours). They make no call, so the lane empties quickly.
		// The replica's lane handlers are shared among the lanes it serves.
		perLane := max(1, w.lanes.maxHandlers/max(1, w.served.count()))
		n := w.lanes.reserve(ent, perLane-int(sl.inFlight.Load()))
		if n == 0 {
			sleep(ctx, 20*time.Millisecond)
			continue
		}
		batch, err := cons.FetchNoWait(n)
		if err != nil {
			w.lanes.unreserve(ent, n)
			if ctx.Err() == nil {
				log.Debug().Err(err).Msg("lane fetch")
			}
			return false // the prober starts serving it again
		}
		got := 0
		for msg := range batch.Messages() {
			got++
			leave := w.lanes.leaver(ent)
			if ctx.Err() != nil || !w.laneRun.add() {
				_ = msg.Nak()
				leave()
				w.lanes.handlerDone()
				continue
			}
			inner := w.lanes.grantTurn(ent)
			sl.inFlight.Add(1)
			sl.undecided.Add(1)
			turn := &laneTurn{after: inner.after, done: sync.OnceFunc(func() { inner.done(); sl.undecided.Add(-1) })}
			w.opts.metrics.InFlight.Inc()
			w.handling.Add(1)
			go func() {
				defer func() {
					turn.done()
					leave()
					w.opts.metrics.InFlight.Dec()
					w.handling.Add(-1)
					sl.inFlight.Add(-1)
					w.lanes.handlerDone()
					w.laneRun.done()
				}()
				w.handleLane(msg, token, turn, leave)
			}()
		}
		w.lanes.unreserve(ent, n-got)
		if got > 0 {
			continue
		}
		if w.closeLane(ctx, cons, token, log) {
			closed = true
			return false
		}
		renewed = time.Time{} // reopened, or not empty yet: renew (and recreate) the record
		sleep(ctx, 50*time.Millisecond)
	}
	// Stopping: the lane is given up once the commands taken hold their
	// places (within the drain timeout, which ends their waits).
	w.awaitDecided(ctx, token, ent, sl)
	return false
}

// awaitDecided keeps the lane's lease until each command taken holds its
// place in the dispenser's order: a lane's next owner then asks for grants
// after them, and the tenant's order is kept.
func (w *Worker) awaitDecided(ctx context.Context, token, ent string, sl *servedLane) {
	renewed := time.Now()
	for sl.undecided.Load() > 0 {
		if time.Since(renewed) > time.Second {
			if !w.renewLane(ctx, token, ent) {
				return
			}
			renewed = time.Now()
		}
		time.Sleep(20 * time.Millisecond) // ctx may have ended: the drain ends the waits
	}
}

// closeLane deletes the record of an empty lane and its consumer. A command
// stored meanwhile found the record before it was deleted (and is seen by the
// second look) or finds none and creates it: either way the lane lives on.
func (w *Worker) closeLane(ctx context.Context, cons jetstream.Consumer, token string, log zerolog.Logger) bool {
	r, rev, err := readMeeting(ctx, w.meetings, token)
	if err != nil || r == nil {
		return false
	}
	if !laneEmpty(ctx, cons) {
		return false
	}
	if _, err := applyMeetingAt(ctx, w.meetings, token, r, rev, meetingChange{event: evLaneClose, now: w.opts.now(), replica: w.id}); err != nil {
		return false
	}
	if !laneEmpty(ctx, cons) {
		return false // the caller writes the record again
	}
	_ = w.js.DeleteConsumer(ctx, StreamParked, laneConsumer(token).Durable)
	log.Debug().Msg("lane empty; its tenant's commands go straight again")
	return true
}

func laneEmpty(ctx context.Context, cons jetstream.Consumer) bool {
	info, err := cons.Info(ctx)
	return err == nil && info.NumPending == 0 && info.NumAckPending == 0
}

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// handleLane runs one lane command through the pipeline, as an intake: it may
// still be parked for its meeting or held with its tenant.
func (w *Worker) handleLane(msg jetstream.Msg, token string, turn *laneTurn, leave func()) {
	w.handleParked(msg, fromLane, w.log.With().Str("lane", token).Logger(),
		func(del *delivery) { del.turn, del.laneLeave = turn, leave },
		func(v verdict, _ *Decoded) verdict {
			turn.done() // decided: the next lane command need not wait for this one's parking or events
			return v
		})
}

// reopenLanes gives a lane that holds commands but has no record its record
// again. A lane loses its record while it holds commands when its owner
// deleted the record of the empty lane, a command was moved in meanwhile (its
// mover saw the record and created none), and the owner stopped before it
// wrote the record again; or when a replica died between storing a moved
// command and creating the record. Without a record no replica serves it.
func (w *Worker) reopenLanes(ctx context.Context, subjects map[string]uint64) {
	prefix := subjectParked + "."
	for subject, n := range subjects {
		if n == 0 || !strings.HasPrefix(subject, prefix) {
			continue
		}
		token := strings.TrimPrefix(subject, prefix)
		if _, ok := w.view.get(token); ok {
			continue
		}
		msg, err := w.parked.GetLastMsgForSubject(ctx, subject)
		if err != nil || !strings.HasPrefix(msg.Header.Get(nats.MsgIdHdr), "xygroup."+kindName(kindLane)+".") {
			continue // a meeting's or a hold's, or gone meanwhile
		}
		ent := peekEnterprise(msg.Data, w.opts.defaultEnterprise)
		if laneToken(ent) != token {
			continue
		}
		rctx, cancel := recordCtx(ctx)
		err = w.parker.openLane(rctx, token, &Decoded{EnterpriseID: ent})
		cancel()
		if err == nil {
			w.log.Warn().Str("lane", token).Str("enterpriseId", ent).Uint64("commands", n).Msg("lane without a record: opened again")
		}
	}
}

// updateLaneGauge sets the commands waiting in each tenant's lane.
func (w *Worker) updateLaneGauge(subjects map[string]uint64) {
	l := w.lanes
	seen := map[string]bool{}
	for token, e := range w.view.all() {
		if e.rec.Kind != kindLane {
			continue
		}
		seen[e.rec.EnterpriseID] = true
		w.opts.metrics.LaneCommands.WithLabelValues(e.rec.EnterpriseID).Set(float64(subjects[parkedSubject(token)]))
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for ent := range l.gauged {
		if !seen[ent] {
			w.opts.metrics.LaneCommands.WithLabelValues(ent).Set(0)
			delete(l.gauged, ent)
		}
	}
	for ent := range seen {
		l.gauged[ent] = true
	}
}
