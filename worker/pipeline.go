package worker

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/xygroup/xygroup/xylink"
)

// Caller makes the API call; *xylink.Client is one.
type Caller interface {
	CreateGroups(ctx context.Context, enterpriseID string, req *xylink.CreateGroupsRequest) ([]xylink.Group, error)
}

// HeaderReplay marks a command re-published by `xygroup replay`: it yields to live commands.
const HeaderReplay = "Xygroup-Replay"

// pipeline composes the steps; each step's logic lives in its own file.
type pipeline struct {
	decoder *decoder
	caller  Caller
	limiter Limiter
	breaker Breaker
	backoff Backoff
	maxWait time.Duration
	metrics *Metrics
	now     func() time.Time

	mu      sync.Mutex
	stopped map[string]string // tenants whose credentials were refused → why
}

// process runs one delivery of a command through the steps and says what to do
// with the message.
func (p *pipeline) process(ctx context.Context, msg jetstream.Msg, meta *jetstream.MsgMetadata, log *zerolog.Logger) (verdict, *Decoded) {
	d := p.decoder.decode(msg.Data(), msg.Headers(), meta.Stream, meta.Sequence.Stream)
	l := log.With().Str("commandId", d.ID).Str("enterpriseId", d.EnterpriseID)
	if d.Cmd != nil {
		l = l.Str("meetingRoomNumber", d.Cmd.MeetingRoomNumber)
	}
	*log = l.Logger()
	now := p.now()

	// 1. decode and validate
	if d.Invalid != nil {
		log.Warn().Str("reason", d.Invalid.DeveloperMessage).Msg("invalid command")
		return verdict{event: failedEvent(d, failure{class: xylink.ClassInvalidCommand,
			userMessage: d.Invalid.UserMessage, developerMessage: d.Invalid.DeveloperMessage}, 0, now)}, d
	}
	deadline := meta.Timestamp.Add(p.maxWait)
	if d.Cmd.Deadline != nil {
		deadline = *d.Cmd.Deadline
	}
	// 2. not before its time
	if nb := d.Cmd.NotBefore; nb != nil && now.Before(*nb) {
		p.metrics.Retries.WithLabelValues("not_before").Inc()
		return verdict{retry: nb.Sub(now)}, d
	}
	attempts := int(meta.NumDelivered)
	prio := PriorityLive
	switch {
	case msg.Headers().Get(HeaderReplay) != "":
		prio = PriorityReplay
	case attempts > 1:
		prio = PriorityRetry
	}
	// 3. breaker: a failing tenant is not called (checked before the limiter so
	// an open breaker spends no grant)
	done, err := p.breaker.Allow(d.EnterpriseID)
	if err != nil {
		p.metrics.Retries.WithLabelValues("breaker_open").Inc()
		return verdict{retry: p.backoff.Delay(1)}, d
	}
	// 4. limiter
	waitStart := time.Now()
	if err := p.limiter.Wait(ctx, d.EnterpriseID, prio); err != nil {
		done(xylink.Outcome{BreakerExcluded: true})
		return verdict{release: true}, d
	}
	p.metrics.LimiterWait.WithLabelValues(prio.String()).Observe(time.Since(waitStart).Seconds())
	// 5. call and classify
	callStart := time.Now()
	groups, callErr := p.caller.CreateGroups(ctx, d.EnterpriseID, &d.Cmd.CreateGroupsRequest)
	outcome := xylink.Classify(callErr)
	done(outcome)
	p.metrics.APICalls.WithLabelValues(d.EnterpriseID, answerLabel(callErr)).Observe(time.Since(callStart).Seconds())
	p.noteTenant(d.EnterpriseID, outcome, callErr, log)
	if outcome.Disposition == xylink.RateLimited {
		p.limiter.Throttled(d.EnterpriseID)
	}
	if ctx.Err() != nil && outcome.Disposition != xylink.Done && outcome.Disposition != xylink.Terminal {
		return verdict{release: true}, d // shutting down: another replica retries at once
	}
	// 6. decide
	v := decide(d, outcome, callErr, groups, attempts, deadline, p.backoff, p.now())
	if v.event == nil {
		p.metrics.Retries.WithLabelValues(outcome.Disposition.String()).Inc()
		log.Info().Str("answer", answerLabel(callErr)).Stringer("disposition", outcome.Disposition).Dur("retryIn", v.retry).
			Int("attempts", attempts).Msg("will retry")
	}
	return v, d
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
