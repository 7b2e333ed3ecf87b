// Package e2e is a fault suite that runs xygroup the way production fails it:
// the real xygroup binary as several worker processes, a real nats-server
// cluster as processes (routes through TCP proxies the suite can blackhole), the
// XYLink sandbox behind an HTTP fault proxy (latency, jitter, 5xx before and
// after the call took effect, connection resets, a slow token endpoint,
// outages), commands published and events read back with plain nats.go, and
// the contract checked from outside after every scenario.
//
// The harness lives in the non-test files, one concept per file; the scenarios
// are the tests. Run them with
//
//	go test ./e2e -v                       # the short profile
//	go test ./e2e -v -long                 # bigger counts
//	go test ./e2e -v -known-failures       # also the scenarios listed in knownFailures
//	go test ./e2e -v -run TestSlowTokenEndpoint -known-failures
//	go test ./e2e -v -keep-logs            # keep every scenario's logs and stores
//	go test -short ./...                   # skips this package
//	go test ./e2e -v -run 'TestExplore$' -seed 42       # the explorer: one seed
//	go test ./e2e -v -run 'TestExplore$' -explore 20m   # fresh seeds for 20 minutes
//
// The short profile takes about seven minutes on a two-core machine (and
// TestExplore three to four more); the README's test command
// (`go test -p 1 -timeout 20m ./...`, which runs it alone) gives it room on a
// slower one. Give -long a -timeout of an hour.
//
// TestExplore (explore_*.go) draws a schedule of commands, cancels, replays and
// faults from a seed, runs it, and checks the contract over the recorded
// history (explore_check.go lists the rules).
//
// A failed scenario keeps its directory (NATS configs, stores and logs, one
// log per worker) and names it in the test output.
package e2e
