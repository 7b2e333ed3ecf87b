package commands

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"

	"github.com/xygroup/xygroup/worker/contract"
)

// CancelRequest names what to cancel: one command (CommandID) or every
// command of a meeting not sent yet (MeetingRoomNumber), of EnterpriseID (""
// for the workers' default tenant).
type CancelRequest struct {
	CommandID         string
	MeetingRoomNumber string
	EnterpriseID      string
	Reason            string
	// CancelID names the cancel in its answers (its Nats-Msg-Id); Cancel
	// makes one when empty.
	CancelID string
}

// ErrCancelRequest: a CancelRequest names neither or both of a command and a meeting.
var ErrCancelRequest = errors.New("a cancel names a command or a meeting, one of them")

// Cancel publishes a cancel on xylink.groups.cancel and returns its CancelID.
// A command not sent yet ends as failed.cancelled; each one that could not be
// cancelled (sent already, in flight, or done) is answered on
// xylink.groups.cancel_rejected. AwaitCancel reads those outcomes.
func Cancel(ctx context.Context, js jetstream.JetStream, req CancelRequest) (string, error) {
	if (req.CommandID == "") == (req.MeetingRoomNumber == "") {
		return "", ErrCancelRequest
	}
	if req.CancelID == "" {
		req.CancelID = "cancel-" + nuid.Next()
	}
	body, err := json.Marshal(contract.Cancel{CommandID: req.CommandID, MeetingRoomNumber: req.MeetingRoomNumber,
		EnterpriseID: req.EnterpriseID, Reason: req.Reason})
	if err != nil {
		return "", err
	}
	m := nats.NewMsg(contract.SubjectCancel)
	m.Data = body
	m.Header.Set(nats.MsgIdHdr, req.CancelID)
	for delay := 100 * time.Millisecond; ; delay = min(2*delay, 2*time.Second) {
		_, err := js.PublishMsg(ctx, m)
		if err == nil {
			return req.CancelID, nil
		}
		// No stream yet, no leader yet, or a stream that does not carry the
		// subject until a worker of this version starts: wait for it.
		if !errors.Is(err, nats.ErrNoResponders) && !errors.Is(err, jetstream.ErrNoStreamResponse) {
			return "", fmt.Errorf("cancel: %w", err)
		}
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("cancel: no stream answers on %s (is a worker of this version running?): %w", contract.SubjectCancel, err)
		case <-time.After(delay):
		}
	}
}

// CancelOutcome is one answer to a cancel: a command's failed.cancelled event,
// or a cancel_rejected answer (Event.Reason says why).
type CancelOutcome struct {
	Subject string
	Event   contract.Event
	Raw     []byte
}

// Cancelled reports whether the outcome is the command's failed.cancelled event.
func (o CancelOutcome) Cancelled() bool {
	return o.Subject == contract.SubjectFailed+"."+contract.ClassCancelled
}

// AwaitCancel reads the events stream from since and returns the outcomes of
// the cancel cancelID (req as given to Cancel), until ctx ends. A command's
// cancel ends at its first outcome; a meeting's window after its first (its
// commands queued behind others end cancelled when their turn comes). A
// command cancelled before it was published has no outcome until it is.
func AwaitCancel(ctx context.Context, js jetstream.JetStream, req CancelRequest, cancelID string, since time.Time, window time.Duration) ([]CancelOutcome, error) {
	r, err := contract.NewReader(ctx, js, contract.ReadOptions{Stream: contract.StreamEvents, Follow: true, StartTime: since,
		Subjects: []string{contract.SubjectFailed + "." + contract.ClassCancelled, contract.SubjectCancelRejected}, Wait: 200 * time.Millisecond})
	if err != nil {
		return nil, err
	}
	var out []CancelOutcome
	for m, err := range r.Messages(ctx) {
		if err != nil {
			if ctx.Err() != nil {
				return out, nil
			}
			continue
		}
		ev, err := m.Event()
		if err != nil || !cancelMatches(req, cancelID, m.Subject(), ev) {
			continue
		}
		out = append(out, CancelOutcome{Subject: m.Subject(), Event: ev, Raw: m.Data()})
		if req.CommandID != "" {
			return out, nil
		}
		wctx, cancel := context.WithTimeout(ctx, window)
		more := awaitMore(wctx, r, req, cancelID)
		cancel()
		return append(out, more...), nil
	}
	return out, nil
}

// awaitMore reads further outcomes until ctx ends.
func awaitMore(ctx context.Context, r *contract.Reader, req CancelRequest, cancelID string) []CancelOutcome {
	var out []CancelOutcome
	for m, err := range r.Messages(ctx) {
		if err != nil {
			if ctx.Err() != nil {
				return out
			}
			continue
		}
		if ev, err := m.Event(); err == nil && cancelMatches(req, cancelID, m.Subject(), ev) {
			out = append(out, CancelOutcome{Subject: m.Subject(), Event: ev, Raw: m.Data()})
		}
	}
	return out
}

func cancelMatches(req CancelRequest, cancelID, subject string, ev contract.Event) bool {
	if ev.CancelID == cancelID {
		return true
	}
	// A command cancelled by an earlier cancel is cancelled all the same.
	return subject != contract.SubjectCancelRejected && req.CommandID != "" && ev.CommandID == req.CommandID &&
		(req.EnterpriseID == "" || ev.EnterpriseID == req.EnterpriseID)
}
