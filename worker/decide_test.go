package worker

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/xygroup/xygroup/xylink"
)

func TestDecide(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	backoff := Backoff{Initial: time.Second, Max: 8 * time.Second}
	d := &Decoded{ID: "cmd-1", Raw: []byte(`{"commandId":"cmd-1"}`), Cmd: &Command{CommandID: "cmd-1"},
		EnterpriseID: "ent", MeetingRoomNumber: "910000000001"}
	groups := []xylink.Group{{GroupName: "g1"}}
	unavailable := &xylink.APIError{HTTPStatus: 503, UserMessage: "busy", DeveloperMessage: "try later"}
	rejected := &xylink.APIError{HTTPStatus: 400, ErrorCode: 66685, UserMessage: "too many", DeveloperMessage: "limit 50"}
	retry := func(c xylink.Class, d xylink.Disposition) xylink.Outcome {
		return xylink.Outcome{Class: c, Disposition: d}
	}

	type want struct {
		subject     string // of the terminal event; empty: a retry
		minD, maxD  time.Duration
		attempts    int
		dev         string // in the failed event's developer message
		errorCode   int
		userMessage string
	}
	cases := []struct {
		name     string
		outcome  xylink.Outcome
		err      error
		attempts int
		deadline time.Time
		want     want
	}{
		{name: "done: created with the groups", outcome: xylink.Outcome{Disposition: xylink.Done},
			attempts: 2, deadline: now.Add(time.Hour), want: want{subject: SubjectCreated, attempts: 2}},
		{name: "done even past the deadline", outcome: xylink.Outcome{Disposition: xylink.Done},
			attempts: 1, deadline: now.Add(-time.Hour), want: want{subject: SubjectCreated, attempts: 1}},
		{name: "terminal: failed with its class and the API's answer", outcome: retry(xylink.ClassTooManyGroups, xylink.Terminal), err: rejected,
			attempts: 1, deadline: now.Add(time.Hour),
			want: want{subject: SubjectFailed + ".too_many_groups", attempts: 1, dev: "limit 50", errorCode: 66685, userMessage: "too many"}},
		{name: "retry: first backoff in [Initial/2, Initial]", outcome: retry(xylink.ClassUnavailable, xylink.Retry), err: unavailable,
			attempts: 1, deadline: now.Add(time.Hour), want: want{minD: 500 * time.Millisecond, maxD: time.Second}},
		{name: "retry: no attempt yet counts as the first", outcome: retry(xylink.ClassUnavailable, xylink.Retry), err: unavailable,
			attempts: 0, deadline: now.Add(time.Hour), want: want{minD: 500 * time.Millisecond, maxD: time.Second}},
		{name: "retry: backoff doubles with attempts", outcome: retry(xylink.ClassUnavailable, xylink.Retry), err: unavailable,
			attempts: 3, deadline: now.Add(time.Hour), want: want{minD: 2 * time.Second, maxD: 4 * time.Second}},
		{name: "retry: backoff capped at Max", outcome: retry(xylink.ClassUnavailable, xylink.Retry), err: unavailable,
			attempts: 20, deadline: now.Add(time.Hour), want: want{minD: 4 * time.Second, maxD: 8 * time.Second}},
		{name: "rate limited: at most 2 s", outcome: retry(xylink.ClassUnavailable, xylink.RateLimited),
			attempts: 10, deadline: now.Add(time.Hour), want: want{minD: time.Second, maxD: 2 * time.Second}},
		{name: "park past the pipeline's parking: retried like the rest", outcome: retry(xylink.ClassMeetingNotStarted, xylink.Park),
			attempts: 1, deadline: now.Add(time.Hour), want: want{minD: 500 * time.Millisecond, maxD: time.Second}},
		{name: "stop tenant: retried until the deadline", outcome: xylink.Outcome{Disposition: xylink.StopTenant},
			attempts: 1, deadline: now.Add(time.Hour), want: want{minD: 500 * time.Millisecond, maxD: time.Second}},
		{name: "backoff beyond the deadline: one last try at it", outcome: retry(xylink.ClassUnavailable, xylink.Retry), err: unavailable,
			attempts: 20, deadline: now.Add(300 * time.Millisecond), want: want{minD: 300 * time.Millisecond, maxD: 300 * time.Millisecond}},
		{name: "deadline passed: failed with the last answer", outcome: retry(xylink.ClassUnavailable, xylink.Retry), err: unavailable,
			attempts: 4, deadline: now,
			want: want{subject: SubjectFailed + ".unavailable", attempts: 4, dev: "deadline 2026-01-02T03:04:05Z passed after 4 attempts; last answer: try later", userMessage: "busy"}},
		{name: "deadline passed while parked: meeting_not_started", outcome: retry(xylink.ClassMeetingNotStarted, xylink.Park),
			err: &xylink.APIError{HTTPStatus: 400, ErrorCode: 66620, UserMessage: "not started"}, attempts: 3, deadline: now.Add(-time.Second),
			want: want{subject: SubjectFailed + ".meeting_not_started", attempts: 3, dev: "passed after 3 attempts", errorCode: 66620, userMessage: "not started"}},
		{name: "deadline passed with credentials refused: unavailable", outcome: xylink.Outcome{Disposition: xylink.StopTenant},
			err: errors.New("credentials refused"), attempts: 1, deadline: now.Add(-time.Second),
			want: want{subject: SubjectFailed + ".unavailable", attempts: 1, dev: "last answer: credentials refused", userMessage: "unavailable"}},
		{name: "deadline passed with the breaker open", outcome: retry(xylink.ClassUnavailable, xylink.Retry), err: ErrBreakerOpen,
			attempts: 0, deadline: now.Add(-time.Second),
			want: want{subject: SubjectFailed + ".unavailable", dev: "circuit breaker of this enterprise was open", userMessage: "unavailable"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for range 20 { // the backoff is random: its bounds must hold every time
				v := decide(d, tc.outcome, tc.err, groups, tc.attempts, tc.deadline, backoff, now)
				if tc.want.subject == "" {
					if v.kind != doRetry || v.event != nil {
						t.Fatalf("want a retry, got event %s", v.event.subject)
					}
					if v.retry < tc.want.minD || v.retry > tc.want.maxD {
						t.Fatalf("retry in %v, want [%v, %v]", v.retry, tc.want.minD, tc.want.maxD)
					}
					continue
				}
				if v.event == nil {
					t.Fatalf("want event %s, got a retry in %v", tc.want.subject, v.retry)
				}
				if v.kind != doEnd || v.retry != 0 || v.parks() {
					t.Fatalf("a terminal verdict does nothing else: %+v", v)
				}
				if v.event.subject != tc.want.subject {
					t.Fatalf("subject %s, want %s", v.event.subject, tc.want.subject)
				}
				switch b := v.event.body.(type) {
				case *CreatedEvent:
					if b.Attempts != tc.want.attempts || len(b.Groups) != 1 || b.Reconciled {
						t.Fatalf("created event %+v", b)
					}
				case *FailedEvent:
					if b.Attempts != tc.want.attempts || !strings.Contains(b.DeveloperMessage, tc.want.dev) ||
						b.UserMessage != tc.want.userMessage || !b.OccurredAt.Equal(now) {
						t.Fatalf("failed event %+v", b)
					}
					code := 0
					if b.ErrorCode != nil {
						code = *b.ErrorCode
					}
					if code != tc.want.errorCode {
						t.Fatalf("errorCode %d, want %d", code, tc.want.errorCode)
					}
				default:
					t.Fatalf("event body %T", b)
				}
			}
		})
	}
}

// Delay stays within [d/2, d], d doubling from Initial up to Max.
func TestDecideBackoffDelay(t *testing.T) {
	cases := []struct {
		b        Backoff
		n        int
		min, max time.Duration
	}{
		{Backoff{}, 1, 500 * time.Millisecond, time.Second}, // defaults: 1 s ...
		{Backoff{}, 30, 30 * time.Second, time.Minute},      // ... to 1 min
		{Backoff{Initial: 100 * time.Millisecond, Max: time.Second}, 2, 100 * time.Millisecond, 200 * time.Millisecond},
		{Backoff{Initial: 100 * time.Millisecond, Max: time.Second}, 5, 500 * time.Millisecond, time.Second},
	}
	for _, tc := range cases {
		for range 50 {
			if d := tc.b.Delay(tc.n); d < tc.min || d > tc.max {
				t.Fatalf("%+v.Delay(%d) = %v, want [%v, %v]", tc.b, tc.n, d, tc.min, tc.max)
			}
		}
	}
}
