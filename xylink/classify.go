package xylink

import (
	"context"
	"errors"
	"net/http"
)

// Class is the contract's name for why a command failed; it is the last part of
// the subject xylink.groups.failed.<class>.
type Class string

const (
	ClassNone              Class = ""
	ClassInvalidCommand    Class = "invalid_command"
	ClassMeetingNotStarted Class = "meeting_not_started"
	ClassAlreadyOpen       Class = "already_open"
	ClassTooManyGroups     Class = "too_many_groups"
	ClassRejected          Class = "rejected"
	ClassUnavailable       Class = "unavailable"
	// ClassCancelled: cancelled before any request for it left
	// (xylink.groups.cancel); never from an API answer.
	ClassCancelled Class = "cancelled"
	// ClassOverQuota: refused by the worker before any request: the
	// enterprise's parked commands hold its share of the parked stream.
	ClassOverQuota Class = "over_quota"
)

// Classes lists every terminal class, in the contract's order.
var Classes = []Class{ClassInvalidCommand, ClassMeetingNotStarted, ClassAlreadyOpen,
	ClassTooManyGroups, ClassRejected, ClassUnavailable, ClassCancelled, ClassOverQuota}

// Disposition is what the caller should do with an outcome.
type Disposition int

const (
	// Done: the groups were created.
	Done Disposition = iota
	// Terminal: the command has failed for good with Class.
	Terminal
	// Park: the meeting is not in progress; wait and try again until the deadline.
	Park
	// Retry: a passing fault; try again with backoff until the deadline.
	Retry
	// RateLimited: the platform refused for rate; slow down, then retry.
	RateLimited
	// StopTenant: credentials or signature were refused. Not the command's fault:
	// keep the tenant's commands queued and check the credentials slowly.
	StopTenant
)

var dispositionNames = [...]string{"done", "terminal", "park", "retry", "rate_limited", "stop_tenant"}

func (d Disposition) String() string {
	if int(d) < len(dispositionNames) {
		return dispositionNames[d]
	}
	return "unknown"
}

// Outcome is the classified result of one call.
type Outcome struct {
	Rule        string // the row of the table that matched
	Class       Class  // the terminal class, if this outcome ends as a failure
	Disposition Disposition
	// Unknown: the request may have been processed without our knowing (a timeout
	// or a lost connection after sending, or a gateway's 408, 500, 502 or 504). A
	// retry that then meets 66684 is the same command succeeding, not a failure.
	Unknown bool
	// BreakerFailure: the answer counts against the circuit breaker (the platform
	// is failing), as opposed to business answers that prove it is alive.
	BreakerFailure bool
	// BreakerExcluded: the answer says nothing about the platform's health (rate
	// limits, credentials, invalid requests): the breaker neither counts it as a
	// success nor as a failure.
	BreakerExcluded bool
}

// rule is one row of the classification table. A row matches when every field it
// sets matches; the first matching row wins, so specific rows come first.
type rule struct {
	name      string
	code      int // errorCode; 0: any
	statusMin int // HTTP status range; 0: any
	statusMax int
	// platformBody: only answers that carry the platform's own error body (an
	// errorCode), as opposed to a gateway's page.
	platformBody bool
	transport    bool // matches transport errors only
	// cancelled: only transport errors caused by the caller's own cancellation.
	cancelled   bool
	class       Class
	disposition Disposition
	// unknown: the platform may have acted before this answer (see Outcome.Unknown).
	unknown     bool
	breakerFail bool
	excluded    bool
}

// table is the one place where answers become classes. A new platform code is one
// row here. Rate-limit and credential codes of the platform are not public; the
// HTTP statuses catch them, and a code can be added as a row when it is known.
//
// Which answers leave the outcome unknown: a gateway in front of the platform
// answers 502 or 504 when the platform did not answer it in time or broke the
// connection, and 408 or 500 may come from either after the request was handed
// on, so the platform may have created the groups. 429 is a refusal before any
// processing (RFC 6585), and a 503 that carries the platform's own error body is
// the platform saying it is not serving; both are known not done. A 503 without
// that body is a gateway's (Envoy, for one, answers 503 to a reset after
// forwarding) and counts as unknown like the other 5xx.
var table = []rule{
	{name: "no meeting in progress", code: CodeNoMeeting, class: ClassMeetingNotStarted, disposition: Park},
	{name: "breakout already open", code: CodeAlreadyOpen, class: ClassAlreadyOpen, disposition: Terminal},
	{name: "too many groups", code: CodeTooManyGroups, class: ClassTooManyGroups, disposition: Terminal},
	{name: "rate limited", statusMin: 429, statusMax: 429, class: ClassUnavailable, disposition: RateLimited, excluded: true},
	{name: "bad credentials or signature", statusMin: 401, statusMax: 401, disposition: StopTenant, excluded: true},
	{name: "forbidden", statusMin: 403, statusMax: 403, disposition: StopTenant, excluded: true},
	{name: "request timeout", statusMin: 408, statusMax: 408, class: ClassUnavailable, disposition: Retry, unknown: true, breakerFail: true},
	{name: "rejected", statusMin: 400, statusMax: 499, class: ClassRejected, disposition: Terminal},
	{name: "platform unavailable", statusMin: 503, statusMax: 503, platformBody: true, class: ClassUnavailable, disposition: Retry, breakerFail: true},
	{name: "server or gateway error", statusMin: 500, statusMax: 599, class: ClassUnavailable, disposition: Retry, unknown: true, breakerFail: true},
	// Our own shutdown or a caller giving up: nothing learnt about the platform.
	{name: "cancelled by the caller", transport: true, cancelled: true, class: ClassUnavailable, disposition: Retry, excluded: true},
	{name: "transport", transport: true, class: ClassUnavailable, disposition: Retry, breakerFail: true},
	// Anything else (1xx, 3xx): the platform did not do what was asked; retry.
	{name: "unexpected status", class: ClassUnavailable, disposition: Retry, breakerFail: true},
}

// answer is what a rule is matched against.
type answer struct {
	status, code         int
	transport, cancelled bool
}

func (r rule) matches(a answer) bool {
	if r.transport != a.transport || (r.cancelled && !a.cancelled) {
		return false
	}
	if r.code != 0 && r.code != a.code {
		return false
	}
	if r.platformBody && a.code == 0 {
		return false
	}
	if r.statusMin != 0 && (a.status < r.statusMin || a.status > r.statusMax) {
		return false
	}
	return true
}

// Classify turns the error of a call (nil for success) into an Outcome. It knows
// *APIError, *TransportError, *GateError, *ValidationError and context errors;
// anything else is treated as a transport failure with an unknown outcome.
func Classify(err error) Outcome {
	if err == nil {
		return Outcome{Rule: "success", Disposition: Done}
	}
	var verr *ValidationError
	if errors.As(err, &verr) || errors.Is(err, ErrUnknownTenant) {
		return Outcome{Rule: "invalid request", Class: ClassInvalidCommand, Disposition: Terminal, BreakerExcluded: true}
	}
	var gerr *GateError
	if errors.As(err, &gerr) {
		// Held by the caller's gate: no request was sent this time.
		return Outcome{Rule: "held before sending", Class: ClassUnavailable, Disposition: Retry, BreakerExcluded: true}
	}
	var cerr *CredentialsError
	if errors.As(err, &cerr) {
		return lookup(answer{status: http.StatusUnauthorized}, false)
	}
	var aerr *APIError
	if errors.As(err, &aerr) {
		return lookup(answer{status: aerr.HTTPStatus, code: aerr.ErrorCode}, false)
	}
	unknown := true
	var terr *TransportError
	if errors.As(err, &terr) {
		unknown = terr.Sent
	}
	cancelled := errors.Is(err, context.Canceled)
	return lookup(answer{transport: true, cancelled: cancelled}, unknown)
}

// ClassifyAnswer classifies an HTTP status and errorCode directly.
func ClassifyAnswer(status, errorCode int) Outcome {
	if status >= 200 && status < 300 {
		return Outcome{Rule: "success", Disposition: Done}
	}
	return lookup(answer{status: status, code: errorCode}, false)
}

func lookup(a answer, unknown bool) Outcome {
	for _, r := range table {
		if r.matches(a) {
			return Outcome{Rule: r.name, Class: r.class, Disposition: r.disposition, Unknown: unknown || r.unknown,
				BreakerFailure: r.breakerFail, BreakerExcluded: r.excluded}
		}
	}
	panic("xylink: classification table has no catch-all row")
}
