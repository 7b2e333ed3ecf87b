package xylink_test

import (
	"context"
	"fmt"

	"github.com/xygroup/xygroup/xylink"
)

// Classify is the one place where an answer becomes what to do next: park a
// command until its meeting starts, retry it, slow down, hold the tenant, or
// end it with a class.
func ExampleClassify() {
	for _, err := range []error{
		nil,
		&xylink.APIError{HTTPStatus: 400, ErrorCode: xylink.CodeNoMeeting},
		&xylink.APIError{HTTPStatus: 400, ErrorCode: xylink.CodeAlreadyOpen},
		&xylink.APIError{HTTPStatus: 429},
		&xylink.APIError{HTTPStatus: 401},
		&xylink.APIError{HTTPStatus: 504},
		context.Canceled,
	} {
		o := xylink.Classify(err)
		fmt.Printf("%-28s %-13s class=%q unknown=%t\n", o.Rule, o.Disposition, o.Class, o.Unknown)
	}
	// Output:
	// success                      done          class="" unknown=false
	// no meeting in progress       park          class="meeting_not_started" unknown=false
	// breakout already open        terminal      class="already_open" unknown=false
	// rate limited                 rate_limited  class="unavailable" unknown=false
	// bad credentials or signature stop_tenant   class="" unknown=false
	// server or gateway error      retry         class="unavailable" unknown=true
	// cancelled by the caller      retry         class="unavailable" unknown=true
}
