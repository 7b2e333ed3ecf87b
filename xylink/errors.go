package xylink

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
)

// APIError is a non-2xx answer of the platform.
type APIError struct {
	HTTPStatus       int
	ErrorCode        int
	UserMessage      string
	DeveloperMessage string
	MoreInfo         string
}

func (e *APIError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "xylink: HTTP %d", e.HTTPStatus)
	if e.ErrorCode != 0 {
		fmt.Fprintf(&b, " errorCode %d", e.ErrorCode)
	}
	if e.UserMessage != "" {
		fmt.Fprintf(&b, " (%s)", e.UserMessage)
	}
	if e.DeveloperMessage != "" {
		fmt.Fprintf(&b, ": %s", e.DeveloperMessage)
	}
	return b.String()
}

// TransportError is a call that got no usable answer: the connection failed, the
// call timed out, or the answer could not be read. Sent reports whether the request
// may have reached the platform, in which case its outcome is unknown.
type TransportError struct {
	Op   string // what failed: "send", "read response", "decode response", "token"
	Sent bool
	Err  error
}

func (e *TransportError) Error() string { return "xylink: " + e.Op + ": " + e.Err.Error() }
func (e *TransportError) Unwrap() error { return e.Err }

// GateError: the gate given with BeforeEachRequest refused a request, which was
// not sent. Requests counts the requests of the same call sent before it (1 when
// the refused one was the repeat after a rejected app token).
type GateError struct {
	Requests int
	Err      error
}

func (e *GateError) Error() string { return "xylink: request held before sending: " + e.Err.Error() }
func (e *GateError) Unwrap() error { return e.Err }

// ValidationError lists why a request breaks the API's rules; it is never sent.
type ValidationError struct{ Problems []string }

func (e *ValidationError) Error() string {
	return "xylink: invalid request: " + strings.Join(e.Problems, "; ")
}

// ErrUnknownTenant: no credentials are configured for the enterprise id.
var ErrUnknownTenant = errors.New("xylink: no credentials for this enterprise")

// ErrResponseTooLarge: the answer exceeded the client's response-size bound.
var ErrResponseTooLarge = errors.New("response larger than the configured limit")

// redactURLError rewrites a *url.Error so that its URL carries no signature and its
// message no secret: net/http quotes the whole URL in its errors.
func redactURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return &url.Error{Op: ue.Op, URL: redactURL(ue.URL), Err: ue.Err}
	}
	return err
}

// redactURL removes the values of signature-bearing query parameters.
func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "[unparseable url]"
	}
	if u.RawQuery == "" {
		return raw
	}
	parts := strings.Split(u.RawQuery, "&")
	for i, p := range parts {
		if k, _, ok := strings.Cut(p, "="); ok && strings.EqualFold(k, "signature") {
			parts[i] = k + "=[redacted]"
		}
	}
	u.RawQuery = strings.Join(parts, "&")
	return u.String()
}
