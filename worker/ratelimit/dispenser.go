package ratelimit

import (
	"container/heap"
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nuid"
)

// dispenser hands out grants, per enterprise, spaced and by priority.
type dispenser struct {
	opts Options
	id   string // names this dispenser in the places it gives (Place)
	mu   sync.Mutex
	ents map[string]*enterpriseQueue
	// due holds the enterprises with waiting requests, earliest dueAt first:
	// a wake-up costs O(log n) per enterprise served, not a look at every one.
	due dueHeap
	// swept is when ents was last cleared of idle enterprises.
	swept   time.Time
	wake    chan struct{}
	done    chan struct{}
	once    sync.Once
	seq     uint64
	granted atomic.Int64
	since   time.Time
}

type enterpriseQueue struct {
	waiting requestHeap
	nextAt  time.Time
	rate    float64
	// dueAt is when the enterprise next needs the dispenser: its next grant,
	// or its head request's MaxQueueWait running out, whichever comes first.
	// index is its place in dispenser.due (-1: nothing waits).
	dueAt time.Time
	index int
	// extra is the learned guard above the floor; changed is when it last
	// changed (widened or narrowed).
	extra     time.Duration
	changed   time.Time
	throttled []time.Time // rate-limit answers of the last ten minutes
	recent    []time.Time // grant times of the last ten seconds
	probes    []time.Time // probe grant times of the last second
	history   history     // grants and 429s per ten seconds, for the status page
	audit     audit       // departures in a sliding second, 429s counted (audit.go)
}

// next is the request to grant now: the head of the queue (live first, then
// retries, probes, replays), except for probes of waiting meetings, which take
// their share of the grants whatever waits, and never more while anything
// else waits.
func (d *dispenser) next(q *enterpriseQueue, rate float64, now time.Time) int {
	recent := 0
	for _, t := range q.probes {
		if now.Sub(t) < time.Second {
			recent++
		}
	}
	underShare := float64(recent) < d.opts.ProbeShare*rate
	probe, other := -1, -1
	for i, p := range q.waiting {
		if p.priority == Probe {
			if probe < 0 || p.seq < q.waiting[probe].seq {
				probe = i
			}
		} else if other < 0 || q.waiting.Less(i, other) {
			other = i
		}
	}
	switch {
	case probe >= 0 && (underShare || other < 0):
		return probe
	case other >= 0:
		return other
	}
	return 0
}

// schedule puts q in the due heap at its dueAt while requests wait, and takes
// it out when none do.
func (d *dispenser) schedule(q *enterpriseQueue) {
	if q.waiting.Len() == 0 {
		if q.index >= 0 {
			heap.Remove(&d.due, q.index)
		}
		return
	}
	// The next request's departure is due at nextAt: its grant, lead before.
	now := d.opts.Now()
	q.dueAt = q.nextAt.Add(-q.waiting[d.next(q, q.rateOr(d.opts.Rate("")), now)].lead)
	// Strictly after MaxQueueWait: that is when grantDue answers "ask again".
	if expires := q.waiting[0].arrived.Add(d.opts.MaxQueueWait + 1); expires.Before(q.dueAt) {
		q.dueAt = expires
	}
	if q.index < 0 {
		heap.Push(&d.due, q)
	} else {
		heap.Fix(&d.due, q.index)
	}
}

func newDispenser(opts Options) *dispenser {
	return &dispenser{opts: opts, id: nuid.Next(), ents: map[string]*enterpriseQueue{}, wake: make(chan struct{}, 1), done: make(chan struct{}),
		since: time.Now()}
}

// maxCatchUp bounds how much a late grant's lateness is made up on the next one.
// Any second then holds at most floor((1 s + maxCatchUp) / spacing) + 1 = rate
// grants, and the delay between a grant and its arrival at the API may vary by
// Guard - maxCatchUp (23 ms) without a window at the API exceeding the rate.
const maxCatchUp = 2 * time.Millisecond

var (
	replyAgain = []byte(`{"ok":false}`)
)

func (d *dispenser) onRequest(m *nats.Msg) {
	var r grantRequest
	if decodeRequest(m.Data, &r) != nil || m.Reply == "" {
		return
	}
	d.mu.Lock()
	q := d.ents[r.Enterprise]
	if q == nil {
		q = &enterpriseQueue{index: -1}
		d.ents[r.Enterprise] = q
	}
	if r.Rate > 0 {
		q.rate = r.Rate
	}
	seq := r.Seq
	if r.Dispenser != d.id || seq == 0 || seq > d.seq {
		d.seq++
		seq = d.seq
	}
	lead := min(max(time.Duration(r.Lead)*time.Microsecond, 0), maxLead)
	heap.Push(&q.waiting, &pending{msg: m, priority: r.Priority, seq: seq, arrived: d.opts.Now(), lead: lead})
	d.schedule(q)
	// The run loop sleeps until the earliest dueAt: it needs waking only
	// when this enterprise is now the earliest.
	first := q.index == 0
	d.mu.Unlock()
	if !first {
		return
	}
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

// throttled widens the enterprise's guard after a rate-limit answer: the
// delay between a grant and its arrival at the API varies more than the guard
// allowed for. The answers of one crowded second come together and count once.
func (d *dispenser) throttled(enterpriseID string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	q := d.ents[enterpriseID]
	if q == nil {
		q = &enterpriseQueue{index: -1}
		d.ents[enterpriseID] = q
	}
	now := d.opts.Now()
	q.throttled = append(q.throttled, now)
	q.history.add(now, 1)
	q.audit.throttled++
	if len(q.throttled) > 64 {
		q.throttled = q.throttled[len(q.throttled)-64:]
	}
	d.guard(q, now) // narrow first for the quiet time before this answer
	if !q.changed.IsZero() && now.Sub(q.changed) < d.opts.GuardCooldown && q.extra > 0 {
		return
	}
	q.extra = min(q.extra+d.opts.GuardStep, max(d.opts.GuardMax-d.opts.Guard, 0))
	q.changed = now
	d.opts.Log.Info().Str("enterpriseId", enterpriseID).Dur("guard", d.opts.Guard+q.extra).
		Msg("rate-limit answer: grants spaced wider")
}

// guard is the enterprise's guard now, narrowed by a fifth of a step for each
// quiet period since it last changed.
func (d *dispenser) guard(q *enterpriseQueue, now time.Time) time.Duration {
	if q.extra > 0 && now.Sub(q.changed) >= d.opts.GuardQuiet {
		steps := int(now.Sub(q.changed) / d.opts.GuardQuiet)
		q.extra = max(0, q.extra-time.Duration(steps)*d.opts.GuardStep/5)
		q.changed = q.changed.Add(time.Duration(steps) * d.opts.GuardQuiet)
	}
	return d.opts.Guard + q.extra
}

// load is what a hand-over of the dispenser's shard would hold up: requests
// waiting and grants of the last ten seconds.
func (d *dispenser) load() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	now := d.opts.Now()
	n := 0
	for _, q := range d.ents {
		n += q.waiting.Len()
		for _, t := range q.recent {
			if now.Sub(t) <= 10*time.Second {
				n++
			}
		}
	}
	return n
}

// budget is how late a grant's request may leave after the departure the
// dispenser spaced: half of what the guard leaves once maxCatchUp is taken.
// The other half absorbs what no replica measures: the variation of the way
// from a replica to the API, and any difference between a network's two ways.
// The guard widens on rate-limit answers, and the budget with it.
func (d *dispenser) budget(q *enterpriseQueue, now time.Time) time.Duration {
	return (d.guard(q, now) - maxCatchUp) / 2
}

func (d *dispenser) spacing(q *enterpriseQueue, now time.Time) time.Duration {
	return time.Duration(float64(time.Second+d.guard(q, now)) / q.rateOr(d.opts.Rate("")))
}

// rateOr is the enterprise's rate as its requests give it, or def.
func (q *enterpriseQueue) rateOr(def float64) float64 {
	if q.rate > 0 {
		return q.rate
	}
	return def
}

// run grants while active() holds, until stopped.
func (d *dispenser) run(ctx context.Context, active func() bool) {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		next := d.grantDue(active)
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		timer.Reset(next)
		select {
		case <-ctx.Done():
			return
		case <-d.done:
			return
		case <-d.wake:
		case <-timer.C:
		}
	}
}

// grantDue answers every request whose grant is due and returns how long until
// the next one is. Only the enterprises whose dueAt has come are looked at.
func (d *dispenser) grantDue(active func() bool) time.Duration {
	d.mu.Lock()
	defer d.mu.Unlock()
	now := d.opts.Now()
	for len(d.due) > 0 && !now.Before(d.due[0].dueAt) {
		q := d.due[0]
		ok := d.serve(q, active)
		d.schedule(q)
		if !ok {
			return 50 * time.Millisecond
		}
	}
	// Enterprises idle for a minute (no grant, no 429) are forgotten, once
	// their guard is back at its floor (a widened guard is kept while it
	// narrows); a look at every one, but once in ten seconds.
	if now.Sub(d.swept) >= 10*time.Second {
		d.swept = now
		for id, q := range d.ents {
			if q.waiting.Len() == 0 && now.After(q.nextAt.Add(time.Minute)) && d.guard(q, now) <= d.opts.Guard &&
				(len(q.throttled) == 0 || now.After(q.throttled[len(q.throttled)-1].Add(time.Minute))) {
				delete(d.ents, id)
			}
		}
	}
	if len(d.due) == 0 {
		return time.Hour
	}
	return d.due[0].dueAt.Sub(now)
}

// serve answers the enterprise's requests that are due: the head's grant once
// nextAt has come, and "ask again" to a head that waited longer than
// MaxQueueWait. It returns false when the dispenser may not grant.
func (d *dispenser) serve(q *enterpriseQueue, active func() bool) bool {
	for q.waiting.Len() > 0 {
		now := d.opts.Now()
		head := q.waiting[0]
		if now.Sub(head.arrived) > d.opts.MaxQueueWait {
			heap.Pop(&q.waiting)
			_ = head.msg.Respond(d.reply(false, head, 0, 0)) // the requester asks again, at its place
			continue
		}
		rate := q.rateOr(d.opts.Rate(""))
		i := d.next(q, rate, now)
		if now.Before(q.nextAt.Add(-q.waiting[i].lead)) {
			return true
		}
		if !active() {
			return false
		}
		head = heap.Remove(&q.waiting, i).(*pending)
		if err := head.msg.Respond(d.reply(true, head, now.Sub(head.arrived), d.budget(q, now))); err != nil {
			continue // not sent at all: its grant is not spent
		}
		if head.priority == Probe {
			cut := 0
			for cut < len(q.probes) && now.Sub(q.probes[cut]) >= time.Second {
				cut++
			}
			q.probes = append(q.probes[:0], q.probes[cut:]...)
			q.probes = append(q.probes, now)
		}
		// Sent: counted as used even if the reply is lost on its way (see Wait).
		d.granted.Add(1)
		q.history.add(now, 0)
		q.audit.departed(now.Add(head.lead))
		q.recent = append(q.recent, now)
		if len(q.recent) > 64 && now.Sub(q.recent[0]) > 10*time.Second {
			cut := 0
			for cut < len(q.recent) && now.Sub(q.recent[cut]) > 10*time.Second {
				cut++
			}
			q.recent = append(q.recent[:0], q.recent[cut:]...)
		}
		// nextAt is the next departure's time. Schedule from the ideal time,
		// so that timer lateness does not eat the budget, but catch up by at
		// most maxCatchUp: departures are never closer than spacing -
		// maxCatchUp, and after a pause there is no burst.
		s := d.spacing(q, now)
		q.nextAt = q.nextAt.Add(s)
		if earliest := now.Add(head.lead + s - maxCatchUp); q.nextAt.Before(earliest) {
			q.nextAt = earliest
		}
	}
	return true
}

// Handover is an enterprise's learned guard as a shard's dispenser hands it
// to the next: durations only (replicas' clocks differ), the guard above its
// floor and how long ago it last changed (widened or narrowed), so that the
// next dispenser narrows it on the same schedule and counts the cooldown of
// the last widening.
type Handover struct {
	ExtraMs float64 `json:"extraMs"`
	AgeMs   float64 `json:"ageMs"`
}

// handover is the state the next dispenser of the shard starts from: the
// enterprises whose guard is above its floor. Spacing state (nextAt) is not
// handed over: the next dispenser starts after this lease expired, more than
// a second after this one's last grant, so no second holds grants of both.
func (d *dispenser) handover() map[string]Handover {
	d.mu.Lock()
	defer d.mu.Unlock()
	now := d.opts.Now()
	var out map[string]Handover
	for id, q := range d.ents {
		if d.guard(q, now) <= d.opts.Guard {
			continue
		}
		if out == nil {
			out = map[string]Handover{}
		}
		out[id] = Handover{ExtraMs: float64(q.extra) / float64(time.Millisecond),
			AgeMs: float64(max(now.Sub(q.changed), 0)) / float64(time.Millisecond)}
	}
	return out
}

// adopt starts from the state a shard's previous dispenser handed over.
func (d *dispenser) adopt(state map[string]Handover) {
	d.mu.Lock()
	defer d.mu.Unlock()
	now := d.opts.Now()
	for id, h := range state {
		extra := min(time.Duration(h.ExtraMs*float64(time.Millisecond)), max(d.opts.GuardMax-d.opts.Guard, 0))
		if extra <= 0 {
			continue
		}
		q := d.ents[id]
		if q == nil {
			q = &enterpriseQueue{index: -1}
			d.ents[id] = q
		}
		q.extra = extra
		q.changed = now.Add(-max(time.Duration(h.AgeMs*float64(time.Millisecond)), 0))
	}
}

// stop ends the dispenser; waiting requesters are told to ask again.
func (d *dispenser) stop() {
	d.once.Do(func() {
		close(d.done)
		d.mu.Lock()
		defer d.mu.Unlock()
		for _, q := range d.ents {
			for _, p := range q.waiting {
				_ = p.msg.Respond(replyAgain)
			}
			q.waiting = nil
		}
		for _, q := range d.due {
			q.index = -1
		}
		d.due = nil
	})
}
