package xylink

import (
	"context"
	"errors"
	"fmt"
	"testing"
)

// Every row of the classification table, by the error a call can return.
func TestClassifyEveryRow(t *testing.T) {
	cases := []struct {
		name        string
		err         error
		rule        string
		class       Class
		disposition Disposition
		unknown     bool
		breakerFail bool
		excluded    bool
	}{
		{"success", nil, "success", ClassNone, Done, false, false, false},
		{"66620", &APIError{HTTPStatus: 400, ErrorCode: 66620}, "no meeting in progress", ClassMeetingNotStarted, Park, false, false, false},
		{"66620 on any status", &APIError{HTTPStatus: 500, ErrorCode: 66620}, "no meeting in progress", ClassMeetingNotStarted, Park, false, false, false},
		{"66684", &APIError{HTTPStatus: 400, ErrorCode: 66684}, "breakout already open", ClassAlreadyOpen, Terminal, false, false, false},
		{"66685", &APIError{HTTPStatus: 400, ErrorCode: 66685}, "too many groups", ClassTooManyGroups, Terminal, false, false, false},
		{"429", &APIError{HTTPStatus: 429, ErrorCode: 42901}, "rate limited", ClassUnavailable, RateLimited, false, false, true},
		{"401", &APIError{HTTPStatus: 401, ErrorCode: 40101}, "bad credentials or signature", ClassNone, StopTenant, false, false, true},
		{"403", &APIError{HTTPStatus: 403}, "forbidden", ClassNone, StopTenant, false, false, true},
		{"token refused", &CredentialsError{EnterpriseID: "e", HTTPStatus: 400}, "bad credentials or signature", ClassNone, StopTenant, false, false, true},
		{"408", &APIError{HTTPStatus: 408}, "request timeout", ClassUnavailable, Retry, true, true, false},
		{"other 4xx", &APIError{HTTPStatus: 400, ErrorCode: 12345}, "rejected", ClassRejected, Terminal, false, false, false},
		{"404", &APIError{HTTPStatus: 404}, "rejected", ClassRejected, Terminal, false, false, false},
		{"500", &APIError{HTTPStatus: 500}, "server or gateway error", ClassUnavailable, Retry, true, true, false},
		{"500 of the platform", &APIError{HTTPStatus: 500, ErrorCode: 50001}, "server or gateway error", ClassUnavailable, Retry, true, true, false},
		{"502", &APIError{HTTPStatus: 502}, "server or gateway error", ClassUnavailable, Retry, true, true, false},
		{"504", &APIError{HTTPStatus: 504}, "server or gateway error", ClassUnavailable, Retry, true, true, false},
		{"503 of the platform", &APIError{HTTPStatus: 503, ErrorCode: 50301}, "platform unavailable", ClassUnavailable, Retry, false, true, false},
		{"503 of a gateway", &APIError{HTTPStatus: 503}, "server or gateway error", ClassUnavailable, Retry, true, true, false},
		{"3xx", &APIError{HTTPStatus: 302}, "unexpected status", ClassUnavailable, Retry, false, true, false},
		{"not sent", &TransportError{Op: "send", Err: errors.New("connection refused")}, "transport", ClassUnavailable, Retry, false, true, false},
		{"sent, timed out", &TransportError{Op: "send", Sent: true, Err: context.DeadlineExceeded}, "transport", ClassUnavailable, Retry, true, true, false},
		{"cancelled before sending", &TransportError{Op: "send", Err: fmt.Errorf("post: %w", context.Canceled)}, "cancelled by the caller", ClassUnavailable, Retry, false, false, true},
		{"cancelled after sending", &TransportError{Op: "send", Sent: true, Err: context.Canceled}, "cancelled by the caller", ClassUnavailable, Retry, true, false, true},
		{"cancelled waiting for a token", &TransportError{Op: "token", Err: context.Canceled}, "cancelled by the caller", ClassUnavailable, Retry, false, false, true},
		{"held by the gate", &GateError{Err: errors.New("breaker open")}, "held before sending", ClassUnavailable, Retry, false, false, true},
		{"token endpoint down", &TransportError{Op: "token", Err: errors.New("HTTP 502")}, "transport", ClassUnavailable, Retry, false, true, false},
		{"foreign error", errors.New("boom"), "transport", ClassUnavailable, Retry, true, true, false},
		{"invalid", &ValidationError{Problems: []string{"x"}}, "invalid request", ClassInvalidCommand, Terminal, false, false, true},
		{"unknown tenant", fmt.Errorf("%w: %q", ErrUnknownTenant, "e9"), "invalid request", ClassInvalidCommand, Terminal, false, false, true},
		{"wrapped", fmt.Errorf("call: %w", &APIError{HTTPStatus: 400, ErrorCode: 66684}), "breakout already open", ClassAlreadyOpen, Terminal, false, false, false},
	}
	rowsSeen := map[string]bool{}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			o := Classify(c.err)
			if o.Rule != c.rule || o.Class != c.class || o.Disposition != c.disposition || o.Unknown != c.unknown ||
				o.BreakerFailure != c.breakerFail || o.BreakerExcluded != c.excluded {
				t.Fatalf("Classify(%v) = %+v", c.err, o)
			}
		})
		rowsSeen[c.rule] = true
	}
	for _, r := range table {
		if !rowsSeen[r.name] {
			t.Errorf("table row %q has no test case", r.name)
		}
	}
	if o := ClassifyAnswer(201, 0); o.Disposition != Done {
		t.Errorf("ClassifyAnswer(201) = %+v", o)
	}
	if o := ClassifyAnswer(400, CodeTooManyGroups); o.Class != ClassTooManyGroups {
		t.Errorf("ClassifyAnswer(400, 66685) = %+v", o)
	}
}

func TestDispositionNames(t *testing.T) {
	for d := Done; d <= StopTenant; d++ {
		if d.String() == "unknown" {
			t.Errorf("disposition %d has no name", d)
		}
	}
}
