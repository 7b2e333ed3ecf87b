// Package xylink is a client for XYLink's breakout-group API
// (POST /api/rest/external/v1/conferenceControl/meeting/dynamicGroup).
//
// It signs requests with signature 1.0 (HMAC-SHA256 over method, path, sorted raw
// query and the first 100 bytes of the body) or signature 2.0 (x-xy-* headers and
// an OAuth app token that it fetches, caches and refreshes), validates a request
// against the rules the API states before sending it, and turns every answer into
// an Outcome through one classification table (Classify), so that callers decide
// what to do with an answer in one place.
//
// Secrets (tokens, client secrets, sign secrets, signatures) are held as Secret
// values, which print as [redacted], and no error or log line of this package
// carries them; URLs in transport errors have their signature removed.
//
// The sandbox package beside this one is a stand-in of the API for tests and demos.
package xylink
