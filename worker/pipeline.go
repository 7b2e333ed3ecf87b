package worker

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/xygroup/xygroup/worker/contract"
	"github.com/xygroup/xygroup/worker/ratelimit"
	"github.com/xygroup/xygroup/xylink"
)

// Caller makes the API call; *xylink.Client is one. The pipeline passes
// xylink.BeforeEachRequest: the rate-limit grant and the breaker's check happen
// in it, immediately before each request.
type Caller interface {
	CreateGroups(ctx context.Context, enterpriseID string, req *xylink.CreateGroupsRequest, opts ...xylink.CallOption) ([]xylink.Group, error)
}

// errNoGrantInTime: no grant came while a request could still be answered
// within the command's in-flight record.
var errNoGrantInTime = errors.New("no rate-limit grant in time")

// staleGrant: a grant older than this when its request could leave is not
// used (the request takes a fresh one), so that arrivals at the API keep the
// dispenser's spacing whatever the time the "sent" mark took to write.
const staleGrant = 25 * time.Millisecond

// errStaleGrant: the "sent" mark took longer than staleGrant; the request
// did not go.
var errStaleGrant = errors.New("rate-limit grant stale after a slow write")

// errMeetingWaiting: while the command waited for its turn or its grant, its
// meeting's first answer (66620, on any replica) came: it parks without a call.
var errMeetingWaiting = errors.New("the meeting was found waiting meanwhile")

// errNotMarked: the record could not say that the request may go out, so it
// did not go (its outcome would be unknowable after a crash).
var errNotMarked = errors.New("request not marked as sent")

// HeaderReplay marks a command re-published by `xygroup replay`: it yields to
// live commands, and a failed one is tried again once per replay. It counts
// only on SubjectReplay (see delivery.replayMark).
const HeaderReplay = contract.HeaderReplay

// pipeline composes the steps; each step's logic lives in its own file.
type pipeline struct {
	decoder *decoder
	caller  Caller
	limiter Limiter
	breaker *SharedBreaker // set in Start, with the breakers bucket
	idem    *idempotency
	parker  *parker
	gate    *meetingGate
	lanes   *lanes // nil: no lanes (every command goes straight)
	backoff Backoff
	maxWait time.Duration
	metrics *Metrics
	now     func() time.Time

	mu      sync.Mutex
	stopped map[string]string // tenants whose credentials were refused → why
}

// process runs one delivery of a command through the steps and says what to do
// with it.
func (p *pipeline) process(ctx context.Context, del *delivery, log *zerolog.Logger) (verdict, *Decoded) {
	// 1. decode and validate
	d := p.decoder.decode(del.data, del.header, del.stream, del.seq)
	l := log.With().Str("commandId", d.ID).Str("enterpriseId", d.EnterpriseID)
	if d.Cmd != nil {
		l = l.Str("meetingRoomNumber", d.Cmd.MeetingRoomNumber)
	}
	*log = l.Logger()
	d.ReplayID = del.replayMark(log)
	now := p.now()
	if d.Invalid != nil {
		log.Warn().Str("reason", d.Invalid.DeveloperMessage).Msg("invalid command")
		// A copy of a command that is done, or whose call is in flight, shares
		// its record and its terminal Nats-Msg-Id: it must not state an outcome
		// of its own over the command's.
		rec, _, err := p.idem.get(ctx, d.ref())
		if err != nil {
			log.Warn().Err(err).Msg("idempotency record unreadable; retrying")
			return verdict{retry: time.Second}, d
		}
		switch {
		case rec.Terminal != nil && d.ReplayID == "":
			return verdict{event: rec.Terminal.outEvent(), repeat: true}, d
		case !rec.PendingUntil.IsZero() && now.Before(rec.PendingUntil):
			return verdict{retry: min(max(rec.PendingUntil.Sub(now), 100*time.Millisecond), time.Second)}, d // its call ends well before
		}
		return verdict{event: failedEvent(d, failure{class: xylink.ClassInvalidCommand,
			userMessage: d.Invalid.UserMessage, developerMessage: d.Invalid.DeveloperMessage}, 0, now)}, d
	}
	deadline := p.deadlineOf(d, del)

	// 2. idempotency: a command with a recorded outcome is not sent again
	firstDelivery := del.kind == fromShared && del.delivered == 1 && d.ReplayID == ""
	rec, recRev, err := p.idem.intake(ctx, d.ref(), firstDelivery)
	if err != nil {
		log.Warn().Err(err).Msg("idempotency record unreadable; retrying")
		return verdict{retry: time.Second}, d
	}
	if rid := d.ReplayID; rid != "" {
		if rec.Terminal != nil {
			again, err := p.idem.retryForReplay(ctx, d.ref(), rid)
			if err != nil {
				return verdict{retry: time.Second}, d
			}
			if again {
				log.Info().Str("replayId", rid).Msg("replay of a failed command: trying again")
				rec.Terminal = nil
			}
		}
	}
	if rec.Terminal != nil {
		log.Info().Msg("already done; publishing its terminal event again")
		return verdict{event: rec.Terminal.outEvent(), repeat: true}, d
	}

	if t := del.intakeTurn; t != nil {
		// The tenant's earlier deliveries on this replica decide first: the
		// lane, the meeting's parking and the grants keep their order.
		select {
		case <-t.after:
		case <-ctx.Done():
		}
	}

	// 3. parking: not before notBefore, and not while the meeting is known to wait
	if del.intake() {
		if nb := d.Cmd.NotBefore; nb != nil && now.Before(*nb) {
			return verdict{park: true, parkFirst: *nb, attempts: rec.Attempts, deadline: deadline}, d
		}
		if v, parked := p.parkIfWaiting(d, rec, deadline, now); parked {
			return v, d
		}
		// One call per meeting at a time on this replica: its answer decides
		// for the rest. They wait for it as long as it may take (its grant
		// included, however long the grant queue), so that a burst for a
		// meeting that has not started costs one call, not one per grant wait.
		//
		// A command that waits here gives up its place among its tenant's
		// (its intake turn, its lane's grant turn and its count in the lane's
		// pipeline): the meeting's first answer may take as long as a grant
		// queue, and the tenant's commands for other meetings go on meanwhile.
		token := meetingToken(d.EnterpriseID, d.Cmd.MeetingRoomNumber)
		rejoin := false
		leave := p.gate.enter(token, p.idem.grantWait+p.idem.lease, func() {
			if t := del.intakeTurn; t != nil {
				t.done()
			}
			if t := del.turn; t != nil {
				t.done()
				del.turn = nil
			}
			if del.laneLeave != nil {
				del.laneLeave()
				del.laneLeave, rejoin = nil, true
			}
		})
		defer leave()
		if v, parked := p.parkIfWaiting(d, rec, deadline, p.now()); parked {
			return v, d
		}
		if rejoin && p.lanes != nil {
			// Going on to a call: counted in the tenant's pipeline again.
			defer p.lanes.join(d.EnterpriseID)()
		}
	}
	if nb := d.Cmd.NotBefore; nb != nil && now.Before(*nb) {
		return verdict{retry: nb.Sub(now)}, d
	}

	// 4. breaker at intake (checked again after the grant, in the gate below)
	if del.intake() && p.parker.holding(d.EnterpriseID) {
		// The tenant's commands are held (its breaker is open, or its held
		// commands are not all released yet): join them, in order.
		until := now
		if u, open := p.breaker.Open(d.EnterpriseID); open {
			until = u
		}
		return verdict{park: true, hold: true, parkFirst: until, attempts: rec.Attempts, deadline: deadline}, d
	}

	// 4b. lanes: a tenant whose commands already fill what its budget serves in
	// the next seconds on this replica, or whose lane still holds commands, has
	// this one moved to its lane rather than wait here holding a slot.
	if del.kind == fromShared && p.lanes != nil {
		leave, turn, lane := p.lanes.admit(d.EnterpriseID)
		if lane {
			return verdict{park: true, lane: true, attempts: rec.Attempts, deadline: deadline}, d
		}
		defer leave()
		defer turn.done()
		del.turn = turn
		if t := del.intakeTurn; t != nil {
			t.done() // in the pipeline: the next may decide
		}
	}
	done, halfOpenProbe, v, stop := p.allow(ctx, d, del, rec, deadline, now)
	if stop {
		return v, d
	}
	prio := PriorityLive
	switch {
	case d.ReplayID != "":
		prio = PriorityReplay
	case del.kind == fromProbe:
		prio = PriorityProbe
	case del.kind == fromLane && del.delivered <= 1:
		// a live command that waited in its lane: live still
	case del.kind != fromShared || del.delivered > 1:
		prio = PriorityRetry
	}

	// 5. mark the call in flight; learn whether an earlier call's outcome is
	// unknown. Every step with I/O of its own comes before the grant.
	before, claimed, err := p.idem.begin(ctx, d.ref(), rec, recRev)
	if err != nil {
		done(xylink.Outcome{BreakerExcluded: true})
		var busy errBusy
		switch {
		case errors.Is(err, errDone):
			return verdict{event: before.Terminal.outEvent(), repeat: true}, d
		case errors.As(err, &busy):
			return verdict{retry: max(busy.until.Sub(p.now()), 100*time.Millisecond)}, d
		}
		log.Warn().Err(err).Msg("idempotency record not written; retrying")
		return verdict{retry: time.Second}, d
	}
	attempts := before.Attempts + 1

	// 6. limiter and breaker, immediately before each request (the client calls
	// the gate once it holds the app token; only signing follows): one grant per
	// request, the repeat after a refused token included, and no request to a
	// tenant that opened while this one waited for its grant.
	//
	// The record says "in flight" until pendingUntil: every request must leave
	// at least a lease (the client's timeout and a margin) before it, so that
	// no other replica takes the command over while a request is out. The app
	// token's fetch and a repeat after a refused token come out of the grant's
	// time, never out of the lease.
	sendBy := time.Now().Add(claimed.until.Sub(p.now()) - p.idem.lease)
	var sentAt time.Time
	marked := false
	gate := func(gctx context.Context) error {
		wctx, cancel := context.WithDeadline(gctx, sendBy)
		defer cancel()
		if t := del.turn; t != nil {
			// Lane order: ask for a grant only once the lane's previous
			// command's request holds its place in the dispenser's order.
			select {
			case <-t.after:
			case <-wctx.Done():
				if gctx.Err() == nil {
					return errNoGrantInTime
				}
				return gctx.Err()
			}
		}
		if p.meetingFoundWaiting(d, del) {
			if t := del.turn; t != nil {
				t.done()
			}
			return errMeetingWaiting
		}
		waitStart := time.Now()
		// The next command of the lane may ask once this one's request holds
		// its place in the dispenser's order, without waiting for its grant.
		queued := func() {}
		if t := del.turn; t != nil {
			queued = t.done
		}
		err := p.limiter.Wait(wctx, d.EnterpriseID, prio, ratelimit.Queued(queued))
		queued()
		if err != nil {
			if gctx.Err() == nil {
				return errNoGrantInTime
			}
			return err
		}
		p.metrics.LimiterWait.WithLabelValues(prio.String()).Observe(time.Since(waitStart).Seconds())
		p.metrics.LimiterGrants.WithLabelValues(d.EnterpriseID, prio.String()).Inc()
		if !halfOpenProbe && p.breaker.State(d.EnterpriseID) == "open" {
			return ErrBreakerOpen
		}
		if marked { // a repeat after a refused app token: marked before the first request
			sentAt = time.Now()
			return nil
		}
		if p.meetingFoundWaiting(d, del) {
			// The grant is spent, but not on a second 66620: with a long grant
			// queue, the meeting's first call on another replica has answered
			// by now, and a burst costs one first call per meeting.
			return errMeetingWaiting
		}
		// The mark is written before the request leaves, never after: a
		// replica killed once its request is out must leave it, or the next
		// call would take a 66684 for a failure. No mark, no request.
		markStart := time.Now()
		if err := p.idem.markSent(wctx, d.ref(), &claimed); err != nil {
			if gctx.Err() != nil {
				return gctx.Err()
			}
			log.Warn().Err(err).Msg("idempotency record: request not marked as sent; not sent")
			return errNotMarked
		}
		marked = true
		if time.Since(markStart) > staleGrant {
			// The write was slow (NATS busy or away): the grant is stale, and
			// a request sent on it now would leave together with later grants
			// (after an outage, all at once). The call is given back, its mark
			// with it, and the command tries again at once with a fresh grant.
			return errStaleGrant
		}
		sentAt = time.Now()
		return nil
	}

	// 7. call and classify
	groups, callErr := p.caller.CreateGroups(ctx, d.EnterpriseID, &d.Cmd.CreateGroupsRequest, xylink.BeforeEachRequest(gate))
	var held *xylink.GateError
	if errors.As(callErr, &held) {
		// Not sent: the attempt is given back (unless a refused-token request
		// went out first) and the command waits as if it had not been taken.
		done(xylink.Outcome{BreakerExcluded: true})
		actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if err := p.idem.abort(actx, d.ref(), held.Requests > 0); err != nil {
			log.Warn().Err(err).Msg("idempotency record not updated")
		}
		switch {
		case ctx.Err() != nil:
			return verdict{release: true}, d // shutting down: another replica takes it at once
		case errors.Is(callErr, ErrBreakerOpen):
			p.metrics.Retries.WithLabelValues("breaker_open").Inc()
			return p.held(d, del, rec, deadline, p.now()), d
		case errors.Is(callErr, errStaleGrant):
			p.metrics.Retries.WithLabelValues("stale_grant").Inc()
			return verdict{retry: 50 * time.Millisecond}, d
		case errors.Is(callErr, errMeetingWaiting):
			p.metrics.Retries.WithLabelValues("meeting_waiting").Inc()
			if v, parked := p.parkIfWaiting(d, rec, deadline, p.now()); parked {
				return v, d
			}
			return verdict{retry: 100 * time.Millisecond}, d
		}
		// No grant within the bound: the limiter is saturated; try again soon.
		p.metrics.Retries.WithLabelValues("limiter_wait").Inc()
		return verdict{retry: 100 * time.Millisecond}, d
	}
	callStart := sentAt
	if callStart.IsZero() {
		callStart = time.Now()
	}
	outcome := xylink.Classify(callErr)
	done(outcome)
	p.metrics.APICalls.WithLabelValues(d.EnterpriseID, answerLabel(callErr)).Observe(time.Since(callStart).Seconds())
	p.noteTenant(d.EnterpriseID, outcome, callErr, log)
	if outcome.Disposition == xylink.StopTenant {
		hctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		p.breaker.HoldForCredentials(hctx, d.EnterpriseID)
		if del.intake() {
			// Not the command's fault: it waits in the tenant's hold, queued.
			_ = p.idem.end(hctx, d.ref(), false, failureOf(xylink.ClassNone, callErr))
			until, open := p.breaker.Open(d.EnterpriseID)
			if !open {
				until = p.now().Add(p.breaker.credentialsRetry)
			}
			return verdict{park: true, hold: true, parkFirst: until, attempts: attempts, deadline: deadline}, d
		}
	}
	if outcome.Disposition == xylink.RateLimited {
		p.limiter.Throttled(d.EnterpriseID)
	}
	// An earlier call may have created the groups: this 66684 is its success.
	if outcome.Class == xylink.ClassAlreadyOpen && before.MaybeCreated {
		log.Info().Int("attempts", attempts).Msg("66684 after a call with an unknown outcome: reconciled as created")
		return verdict{event: createdEvent(d, nil, true, attempts, p.now()), meetingAnswer: true, record: &claimed}, d
	}
	terminal := outcome.Disposition == xylink.Done || outcome.Disposition == xylink.Terminal
	if !terminal {
		// Record that no call is in flight, and whether this one may have taken effect.
		ectx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		if err := p.idem.end(ectx, d.ref(), outcome.Unknown, failureOf(outcome.Class, callErr)); err != nil {
			log.Warn().Err(err).Msg("idempotency record not updated")
		}
		cancel()
		if ctx.Err() != nil {
			return verdict{release: true}, d // shutting down: another replica retries at once
		}
	}

	// 8. decide
	now = p.now()
	if outcome.Disposition == xylink.Park {
		p.gate.hint(meetingToken(d.EnterpriseID, d.Cmd.MeetingRoomNumber), now)
		if now.Before(deadline) {
			v := verdict{waiting: true, attempts: attempts, deadline: deadline}
			if del.intake() {
				v.park, v.parkFirst = true, now.Add(p.parker.backoff.Delay(1))
			} else {
				v.retry = p.parker.backoff.Delay(attempts)
			}
			return v, d
		}
	}
	v = decide(d, outcome, callErr, groups, attempts, deadline, p.backoff, now)
	if terminal {
		v.record = &claimed // the record as this call last wrote it: finish writes without reading
	}
	v.meetingAnswer = outcome.Disposition == xylink.Done || (outcome.Disposition == xylink.Terminal && outcome.Class != xylink.ClassInvalidCommand)
	if v.event == nil {
		p.metrics.Retries.WithLabelValues(outcome.Disposition.String()).Inc()
		log.Info().Str("answer", answerLabel(callErr)).Stringer("disposition", outcome.Disposition).Dur("retryIn", v.retry).
			Int("attempts", attempts).Msg("will retry")
	}
	return v, d
}

// deadlineOf is when the command stops being tried: its own deadline, or
// maxWait after it first arrived.
func (p *pipeline) deadlineOf(d *Decoded, del *delivery) time.Time {
	if d.Cmd != nil && d.Cmd.Deadline != nil {
		return *d.Cmd.Deadline
	}
	return del.received.Add(p.maxWait)
}

// allow asks the breaker for a call. With the tenant open cluster-wide, a
// shared command goes to the tenant's hold; a probe whose time has come may
// become the one half-open probe of the cluster (halfOpenProbe); anything else
// waits.
func (p *pipeline) allow(ctx context.Context, d *Decoded, del *delivery, rec commandRecord, deadline, now time.Time) (done func(xylink.Outcome), halfOpenProbe bool, v verdict, stop bool) {
	sb := p.breaker
	if until, open := sb.Open(d.EnterpriseID); open {
		if del.kind == fromProbe && !now.Before(until) && sb.ClaimProbe(ctx, d.EnterpriseID) {
			return func(o xylink.Outcome) {
				pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
				defer cancel()
				sb.ProbeResult(pctx, d.EnterpriseID, o)
			}, true, verdict{}, false
		}
		if del.intake() {
			p.metrics.Retries.WithLabelValues("breaker_open").Inc()
		}
		return nil, false, p.held(d, del, rec, deadline, now), true
	}
	allow, err := p.breaker.Allow(d.EnterpriseID)
	if err == nil {
		return allow, false, verdict{}, false
	}
	p.metrics.Retries.WithLabelValues("breaker_open").Inc()
	return nil, false, p.held(d, del, rec, deadline, now), true
}

// held is what becomes of a command whose tenant is open. Open cluster-wide,
// intake pauses for the tenant: a shared delivery waits in the tenant's hold,
// acked, spending no delivery and no attempt, while other tenants flow; a
// parked or released one is tried again when the open period ends. Refused
// only by this replica's gobreaker (not yet shared, or its half-open probe
// taken), the command retries with backoff until its deadline.
func (p *pipeline) held(d *Decoded, del *delivery, rec commandRecord, deadline, now time.Time) verdict {
	if until, open := p.breaker.Open(d.EnterpriseID); open {
		if del.intake() {
			return verdict{park: true, hold: true, parkFirst: until, attempts: rec.Attempts, deadline: deadline}
		}
		return verdict{retry: max(until.Sub(now), time.Second)}
	}
	return decide(d, xylink.Outcome{Class: xylink.ClassUnavailable, Disposition: xylink.Retry}, rec.lastError(ErrBreakerOpen), nil,
		rec.Attempts, deadline, p.backoff, now)
}

// parkIfWaiting parks a command whose meeting is known to wait: by the shared
// meetings bucket, or by an answer on this replica a moment ago.
// meetingFoundWaiting: a command taken in (not a probe, nor a released one)
// whose meeting is now known to wait for its start, on any replica.
func (p *pipeline) meetingFoundWaiting(d *Decoded, del *delivery) bool {
	if !del.intake() {
		return false
	}
	_, waiting := p.parker.waiting(d.EnterpriseID, d.Cmd.MeetingRoomNumber)
	return waiting
}

func (p *pipeline) parkIfWaiting(d *Decoded, rec commandRecord, deadline, now time.Time) (verdict, bool) {
	m, waiting := p.parker.waiting(d.EnterpriseID, d.Cmd.MeetingRoomNumber)
	if !waiting && !p.gate.hinted(meetingToken(d.EnterpriseID, d.Cmd.MeetingRoomNumber), now) {
		return verdict{}, false
	}
	first := m.NextProbeAt
	if first.IsZero() {
		first = now.Add(p.parker.backoff.Delay(1))
	}
	return verdict{park: true, parkFirst: first, attempts: rec.Attempts, deadline: deadline}, true
}

// noteTenant tracks tenants whose credentials were refused, for readiness.
func (p *pipeline) noteTenant(enterpriseID string, o xylink.Outcome, err error, log *zerolog.Logger) {
	p.mu.Lock()
	defer p.mu.Unlock()
	_, wasStopped := p.stopped[enterpriseID]
	switch {
	case o.Disposition == xylink.StopTenant:
		if !wasStopped {
			log.Error().Err(err).Msg("XYLink refused the tenant's credentials; its commands stay queued and are retried slowly")
		}
		p.stopped[enterpriseID] = err.Error()
	case wasStopped && o.Disposition != xylink.Retry && o.Disposition != xylink.RateLimited:
		delete(p.stopped, enterpriseID)
		log.Info().Msg("the tenant's credentials are accepted again")
	}
}

func (p *pipeline) stoppedTenants() map[string]string {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make(map[string]string, len(p.stopped))
	for k, v := range p.stopped {
		out[k] = v
	}
	return out
}

// answerLabel names an answer for metrics and logs: ok, an errorCode, an HTTP
// status, or transport.
func answerLabel(err error) string {
	if err == nil {
		return "ok"
	}
	var ae *xylink.APIError
	if errors.As(err, &ae) {
		if ae.ErrorCode >= 60000 {
			return strconv.Itoa(ae.ErrorCode)
		}
		return strconv.Itoa(ae.HTTPStatus)
	}
	var ce *xylink.CredentialsError
	if errors.As(err, &ce) {
		return "credentials"
	}
	var ve *xylink.ValidationError
	if errors.As(err, &ve) {
		return "invalid"
	}
	return "transport"
}
