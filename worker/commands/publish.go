package commands

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"

	"github.com/xygroup/xygroup/worker/contract"
	"github.com/xygroup/xygroup/worker/record"
)

// Subjects and stream of the contract, under the names this package has
// always exported.
const (
	SubjectCreate  = contract.SubjectCreate
	SubjectCreated = contract.SubjectCreated
	SubjectFailed  = contract.SubjectFailed
	StreamEvents   = contract.StreamEvents
)

// Ref names a published command: the commandId its events carry, and the
// enterprise it names ("" when it names none, and the worker's default applies).
type Ref struct {
	EnterpriseID string
	CommandID    string
}

// MsgID is the Nats-Msg-Id Publish gives a command: its commandId, prefixed
// with "<enterpriseId>/" when the command names its tenant, so that the commands
// stream's dedupe never takes one tenant's command for another's. Both may hold
// a "/": in the enterpriseId "%" and "/" are written %25 and %2F, and a
// commandId without a tenant that holds a "/" is written after a "/", so that
// no two (enterpriseId, commandId) pairs share a Nats-Msg-Id.
func MsgID(enterpriseID, commandID string) string {
	if enterpriseID == "" {
		if strings.Contains(commandID, "/") {
			return "/" + commandID
		}
		return commandID
	}
	e := strings.NewReplacer("%", "%25", "/", "%2F").Replace(enterpriseID)
	return e + "/" + commandID
}

// Publish stores one command on xylink.groups.create with Nats-Msg-Id set to
// MsgID(enterpriseId, commandId) and returns its Ref: the commandId its events
// will carry, and its enterprise. A command without a commandId is given
// "cli-…" as its bare Nats-Msg-Id, which the worker takes as its commandId.
func Publish(ctx context.Context, js jetstream.JetStream, raw []byte, headers nats.Header) (Ref, error) {
	ref, _, err := PublishAck(ctx, js, raw, headers)
	return ref, err
}

// PublishAck is Publish, and says whether the commands stream already held
// the command (its Nats-Msg-Id within the stream's dedupe window): then the
// stream dropped it, no new event will come of it, and its outcome, if it has
// one yet, is in the workers' records (RecordLookup).
func PublishAck(ctx context.Context, js jetstream.JetStream, raw []byte, headers nats.Header) (Ref, bool, error) {
	ref := refOf(raw)
	msgID := MsgID(ref.EnterpriseID, ref.CommandID)
	if ref.CommandID == "" {
		ref.CommandID = "cli-" + nuid.Next()
		msgID = ref.CommandID
	}
	id := ref.CommandID
	m := nats.NewMsg(SubjectCreate)
	m.Data = raw
	for k, v := range headers {
		m.Header[k] = v
	}
	m.Header.Set(nats.MsgIdHdr, msgID)
	for delay := 100 * time.Millisecond; ; delay = min(2*delay, 2*time.Second) {
		ack, err := js.PublishMsg(ctx, m)
		if err == nil {
			return ref, ack.Duplicate, nil
		}
		// No stream yet (no worker has started) or no leader yet: wait for it.
		if !errors.Is(err, nats.ErrNoResponders) && !errors.Is(err, jetstream.ErrNoStreamResponse) {
			return Ref{}, false, fmt.Errorf("publish %s: %s%w", id, Refusal(err), err)
		}
		select {
		case <-ctx.Done():
			return Ref{}, false, fmt.Errorf("publish %s: no stream answers on %s (is a worker running?): %w", id, SubjectCreate, err)
		case <-time.After(delay):
		}
	}
}

// Refusal says why the commands stream refused a command for good, as the
// start of an error message ("" when err is not such a refusal): the stream is
// full, or the command is larger than a message of it may be. Either way the
// command was not stored, and no event will come for it.
func Refusal(err error) string {
	var apiErr *jetstream.APIError
	if !errors.As(err, &apiErr) {
		return ""
	}
	switch {
	case apiErr.ErrorCode == jstErrCodeStoreFailed && (strings.Contains(apiErr.Description, "maximum bytes") || strings.Contains(apiErr.Description, "maximum messages")):
		return "refused, not stored: the commands stream " + contract.StreamCommands + " is full (its workers are stopped or behind, " +
			"or its limits are too small for the commands it must hold); publish it again later: "
	case apiErr.ErrorCode == jetstream.JSErrCodeStreamMessageExceedsMaximum:
		return "refused, not stored: the command is larger than a message of the commands stream " + contract.StreamCommands +
			" may be (a command may have 256 KiB): "
	}
	return ""
}

// jstErrCodeStoreFailed: the stream could not store the message (full, with
// discard new).
const jstErrCodeStoreFailed jetstream.ErrorCode = 10077

// maxEnterpriseID is the longest enterpriseId a valid command has (the schema's
// limit); a longer one makes the command invalid, and its event carries it cut.
const maxEnterpriseID = 128

// refOf reads a command's commandId and enterpriseId, as far as they are strings.
func refOf(raw []byte) Ref {
	peek := contract.IdentityOf(raw)
	ref := Ref{CommandID: peek.CommandID, EnterpriseID: peek.EnterpriseID}
	if len(ref.EnterpriseID) > maxEnterpriseID {
		ref.EnterpriseID = "" // matched on its commandId alone
	}
	return ref
}

// WorkersDefaultEnterprise reads the workers' default tenant (their
// XYLINK_ENTERPRISE_ID, the tenant of the commands that name none) from the
// heartbeats of the running replicas. It fails when no running replica names
// one (none runs, or they predate it) or when they name different ones.
func WorkersDefaultEnterprise(ctx context.Context, js jetstream.JetStream) (string, error) {
	kv, err := js.KeyValue(ctx, contract.BucketReplicas)
	if err != nil {
		return "", fmt.Errorf("read the workers' heartbeats (%s): %w", contract.BucketReplicas, err)
	}
	keys, err := kv.ListKeys(ctx)
	if err != nil {
		return "", fmt.Errorf("read the workers' heartbeats (%s): %w", contract.BucketReplicas, err)
	}
	seen := map[string]bool{}
	for k := range keys.Keys() {
		e, err := kv.Get(ctx, k)
		if err != nil {
			continue // expired meanwhile
		}
		var hb struct {
			DefaultEnterprise string `json:"defaultEnterprise"`
		}
		if json.Unmarshal(e.Value(), &hb) == nil && hb.DefaultEnterprise != "" {
			seen[hb.DefaultEnterprise] = true
		}
	}
	switch len(seen) {
	case 0:
		return "", errors.New("no running worker names its default tenant")
	case 1:
		for e := range seen {
			return e, nil
		}
	}
	names := make([]string, 0, len(seen))
	for e := range seen {
		names = append(names, e)
	}
	slices.Sort(names)
	return "", fmt.Errorf("the running workers name different default tenants (%s)", strings.Join(names, ", "))
}

// Event is a terminal event as received.
type Event struct {
	Subject      string
	CommandID    string
	EnterpriseID string
	Failed       bool
	Data         json.RawMessage
	// Ref is the awaited command this event answers.
	Ref Ref
}

// LookupFunc reads the terminal event of a command from the workers' records:
// its subject and its body as published, and whether there is one yet.
// enterpriseID is the one the command names ("" when it names none).
type LookupFunc func(ctx context.Context, enterpriseID, commandID string) (subject string, event []byte, found bool, err error)

// RecordLookup reads terminal events from the workers' idempotency records (the
// xygroup-commands bucket, one key read at a time). defaultEnterprise is the
// workers' default tenant (XYLINK_ENTERPRISE_ID), the tenant of commands that
// name none: records are kept per tenant.
func RecordLookup(js jetstream.JetStream, defaultEnterprise string) LookupFunc {
	return func(ctx context.Context, enterpriseID, commandID string) (string, []byte, bool, error) {
		if enterpriseID == "" {
			enterpriseID = defaultEnterprise
		}
		st, err := record.Lookup(ctx, js, enterpriseID, commandID)
		if err != nil || st.Terminal == "" || len(st.Event) == 0 {
			return "", nil, false, err
		}
		return st.Terminal, st.Event, true, nil
	}
}

// Waiter follows the terminal events from the moment it is made, on core NATS
// subscriptions (it creates no consumer), so that a command published after it
// is made cannot be missed while the connection stands. Its lookup covers the
// rest: a command that ended before (published again, the commands stream drops
// it as a duplicate and no new event comes), and events published while the
// connection was down. Close it when done.
type Waiter struct {
	nc     *nats.Conn
	lookup LookupFunc
	msgs   chan *nats.Msg // both subscriptions, in the order the server sent
	subs   []*nats.Subscription
	status chan nats.Status

	dropped  int           // events dropped from a full msgs, as last seen
	every    time.Duration // between lookups of the commands still pending
	parallel int           // lookups at once
}

// Defaults of the Waiter.
const (
	lookupEvery    = 5 * time.Second
	lookupParallel = 8
	lookupTimeout  = 10 * time.Second
	// eventBuffer: events kept while nobody awaits (while the commands are
	// published); beyond it they are dropped, and the commands looked up.
	eventBuffer = 1 << 16
)

// NewWaiter subscribes to xylink.groups.created and xylink.groups.failed.>;
// make it before publishing the commands it is to await. lookup reads the
// commands that ended before, or while the connection was down (nil: none are
// looked up; RecordLookup reads the workers' records).
func NewWaiter(ctx context.Context, js jetstream.JetStream, lookup LookupFunc) (*Waiter, error) {
	nc := js.Conn()
	w := &Waiter{nc: nc, lookup: lookup, msgs: make(chan *nats.Msg, eventBuffer),
		every: lookupEvery, parallel: lookupParallel}
	w.status = nc.StatusChanged(nats.CONNECTED, nats.CLOSED)
	subjects := []string{contract.SubjectCreated, contract.SubjectFailedAll}
	for _, subj := range subjects {
		sub, err := nc.ChanSubscribe(subj, w.msgs)
		if err != nil {
			w.Close()
			return nil, fmt.Errorf("follow events: %w", err)
		}
		w.subs = append(w.subs, sub)
	}
	// The server refuses a subscription before it answers the flush.
	timeout := 10 * time.Second
	if d, ok := ctx.Deadline(); ok {
		timeout = min(timeout, time.Until(d))
	}
	if err := nc.FlushTimeout(max(timeout, time.Millisecond)); err != nil {
		w.Close()
		return nil, fmt.Errorf("follow events: %w", err)
	}
	if err := nc.LastError(); errors.Is(err, nats.ErrPermissionViolation) {
		for _, subj := range subjects {
			if strings.Contains(err.Error(), `"`+subj+`"`) {
				w.Close()
				return nil, fmt.Errorf("follow events: %w", err)
			}
		}
	}
	return w, nil
}

// Close ends the subscriptions.
func (w *Waiter) Close() {
	for _, sub := range w.subs {
		_ = sub.Unsubscribe()
	}
	w.subs = nil
	w.nc.RemoveStatusListener(w.status)
}

// droppedMore reports whether events were dropped since it was last asked.
func (w *Waiter) droppedMore() bool {
	n := 0
	for _, sub := range w.subs {
		if d, err := sub.Dropped(); err == nil {
			n += d
		}
	}
	more := n > w.dropped
	w.dropped = n
	return more
}

type lookupResult struct {
	ref     Ref
	subject string
	event   []byte
	found   bool
	err     error
}

// Await calls found for the terminal event of each command, in the order they
// come, until all have one or ctx ends. The commands are looked up right away
// (they may have ended before they were published again), after every
// reconnection (events published meanwhile were not received), and every few
// seconds while some are pending.
func (w *Waiter) Await(ctx context.Context, cmds []Ref, found func(Event)) error {
	var mu sync.Mutex // pending is read by the lookups too
	pending := make(map[Ref]bool, len(cmds))
	for _, c := range cmds {
		pending[c] = true
	}
	isPending := func(r Ref) bool { mu.Lock(); defer mu.Unlock(); return pending[r] }
	left := func() int { mu.Lock(); defer mu.Unlock(); return len(pending) }
	// resolve takes an event for the pending command it answers, if any.
	resolve := func(subject string, data []byte, only *Ref) {
		e := contract.IdentityOf(data)
		exact, anyEnterprise := Ref{EnterpriseID: e.EnterpriseID, CommandID: e.CommandID}, Ref{CommandID: e.CommandID}
		if only != nil && *only != exact && *only != anyEnterprise {
			return // a record of another enterprise's command with the same commandId
		}
		mu.Lock()
		var ref Ref
		if pending[exact] {
			ref = exact
		} else if pending[anyEnterprise] {
			ref = anyEnterprise
		}
		if ref.CommandID != "" {
			delete(pending, ref)
		}
		mu.Unlock()
		if ref.CommandID != "" {
			found(Event{Subject: subject, CommandID: e.CommandID, EnterpriseID: e.EnterpriseID, Data: data,
				Failed: contract.IsFailed(subject), Ref: ref})
		}
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	results := make(chan lookupResult)
	roundDone := make(chan time.Duration)
	var (
		running, again bool
		lastErr        error
		next           = time.NewTimer(0) // right away: the commands were just published
	)
	defer next.Stop()
	round := func() {
		if w.lookup == nil {
			return
		}
		if running {
			again = true
			return
		}
		next.Stop()
		running, again = true, false
		mu.Lock()
		refs := make([]Ref, 0, len(pending))
		for r := range pending {
			refs = append(refs, r)
		}
		mu.Unlock()
		go w.lookupAll(ctx, refs, isPending, results, roundDone)
	}
	if w.droppedMore() {
		round()
	}
	for left() > 0 {
		select {
		case <-ctx.Done():
			if lastErr != nil {
				return fmt.Errorf("%d command(s) without a terminal event yet (last lookup: %v): %w", left(), lastErr, context.DeadlineExceeded)
			}
			return fmt.Errorf("%d command(s) without a terminal event yet: %w", left(), context.DeadlineExceeded)
		case m := <-w.msgs:
			resolve(m.Subject, m.Data, nil)
			if len(w.msgs) == 0 && w.droppedMore() {
				round() // the buffer was full: what it dropped is in the records
			}
		case r := <-results:
			switch {
			case r.err != nil:
				lastErr = r.err
			case r.found:
				resolve(r.subject, r.event, &r.ref)
			}
		case took := <-roundDone:
			running = false
			if again {
				round()
			} else {
				next.Reset(max(w.every, 3*took)) // lookups take at most a quarter of the time
			}
		case <-next.C:
			round()
		case s, ok := <-w.status:
			if !ok || s == nats.CLOSED {
				return fmt.Errorf("follow events: %w", nats.ErrConnectionClosed)
			}
			round() // reconnected: what was published while down was not received
		}
	}
	return nil
}

// lookupAll looks up the commands still pending, a few at a time, and reports
// how long it took.
func (w *Waiter) lookupAll(ctx context.Context, refs []Ref, pending func(Ref) bool, out chan<- lookupResult, done chan<- time.Duration) {
	start := time.Now()
	todo := make(chan Ref)
	var wg sync.WaitGroup
	for range min(w.parallel, max(len(refs), 1)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for r := range todo {
				lctx, cancel := context.WithTimeout(ctx, lookupTimeout)
				subject, event, found, err := w.lookup(lctx, r.EnterpriseID, r.CommandID)
				cancel()
				if ctx.Err() != nil {
					return
				}
				if !found && err == nil {
					continue
				}
				select {
				case out <- lookupResult{ref: r, subject: subject, event: event, found: found, err: err}:
				case <-ctx.Done():
					return
				}
			}
		}()
	}
feed:
	for _, r := range refs {
		if !pending(r) {
			continue
		}
		select {
		case todo <- r:
		case <-ctx.Done():
			break feed
		}
	}
	close(todo)
	wg.Wait()
	select {
	case done <- time.Since(start):
	case <-ctx.Done():
	}
}
