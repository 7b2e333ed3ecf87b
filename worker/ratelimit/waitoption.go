package ratelimit

// WaitOption tunes one Wait.
type WaitOption func(*waitOptions)

type waitOptions struct {
	onQueued  func()
	departure *Departure
}

// TakeDeparture has Wait return as soon as the grant is in hand, with its
// departure window in d, rather than wait for the window itself: the caller
// has work to do before its request leaves (a "sent" mark), which spends the
// same budget. It calls d.Leave once ready, and d.Check right before the
// request is written; on ErrLate it does not send, and asks for another
// grant, with the same d: it is asked for at the first one's place, before
// the requests sent after it. A Local limiter leaves d without bounds.
func TakeDeparture(d *Departure) WaitOption {
	return func(o *waitOptions) { o.departure = d }
}

// Queued calls f once the request for the grant holds its place in the
// dispenser's order: sent to the dispenser on this replica's connection (or,
// for Local, reserved). A request for the same enterprise and priority that
// is sent after f returns is granted after this one, so a caller that keeps
// an order among its requests need not wait for each grant before asking for
// the next. The exception: requests told to ask again (a change of dispenser,
// a grant queue longer than MaxQueueWait, no dispenser) ask again in no
// particular order.
func Queued(f func()) WaitOption {
	return func(o *waitOptions) { o.onQueued = f }
}

func waitOptionsOf(opts []WaitOption) *waitOptions {
	o := &waitOptions{}
	for _, f := range opts {
		f(o)
	}
	return o
}

// queued calls the Queued function once, at the first call.
func (o *waitOptions) queued() {
	if f := o.onQueued; f != nil {
		o.onQueued = nil
		f()
	}
}

// DepartureFor is, for a Limiter implementation, the Departure that a
// caller gave with TakeDeparture (nil without one): the implementation fills
// it with its grant's window.
func DepartureFor(opts []WaitOption) *Departure {
	return waitOptionsOf(opts).departure
}
