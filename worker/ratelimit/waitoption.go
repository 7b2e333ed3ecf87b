package ratelimit

// WaitOption tunes one Wait.
type WaitOption func(*waitOptions)

type waitOptions struct {
	onQueued func()
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
