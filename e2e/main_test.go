package e2e

import (
	"flag"
	"fmt"
	"os"
	"testing"
	"time"
)

var (
	long              = flag.Bool("long", false, "bigger counts (hundreds to thousands of commands per scenario)")
	knownFailuresFlag = flag.Bool("known-failures", false, "also run the scenarios listed in knownFailures")
	keep              = flag.Bool("keep-logs", false, "keep every scenario's logs and stores, not only a failed one's")
)

// knownFailures are the scenarios that fail on today's code, with the reason.
// They are skipped unless -known-failures is given. Remove a line when its fix
// lands.
var knownFailures = map[string]string{
	"TestSlowTokenEndpoint":         "the rate grant is taken before the 2.0 token fetch, so calls that waited for the token arrive together: 23 in one second at 20/s",
	"TestAPIOutage":                 "the breaker does not stop the calls: 101 calls during a 15 s outage, bound 15",
	"TestBadInputAtVolume":          "an oversized command's failed event exceeds the NATS payload limit and is retried forever (4 of 182 never end); invalid commands' events carry empty meetingRoomNumber and enterpriseId",
	"TestSIGTERMWhileProbing":       "a replica stopped while probing leaves its probe claim (one minute): the meetings' commands were created 60 s after the start, bound 25 s",
	"TestNATSServerRestart":         "the limiter's in-memory bucket is gone after the server restart and no grant is given: 224 of 300 never end; nats.go prints plain 'slow consumer' lines",
	"TestClusterNodeRestart":        "nats.go prints plain 'slow consumer' lines into the JSON log when the commands leader stops (and 21 calls were sent in one second during the failover)",
	"TestNetworkJitter":             "grants are spaced for 25 ms of delay variation; 0-50 ms of jitter on the way in puts 21 calls in one second at the API (20 as sent), with 429 answers",
	"TestGatewayTimeoutAfterCommit": "a 504 after the create is not an unknown outcome: 17 of 400 failed.already_open",
}

// knownFailure skips the scenario when it is a known failure and
// -known-failures is not given.
func knownFailure(t *testing.T) {
	t.Helper()
	if why, ok := knownFailures[t.Name()]; ok && !*knownFailuresFlag {
		t.Skipf("known failure on today's code (%s); run with -known-failures", why)
	}
}

// pick is the short profile's count, or the long one's with -long.
func pick[T any](short, longer T) T {
	if *long {
		return longer
	}
	return short
}

func TestMain(m *testing.M) {
	flag.Parse()
	if testing.Short() {
		fmt.Println("e2e: skipped in -short mode")
		os.Exit(0)
	}
	dir, err := os.MkdirTemp("", "xygroup-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	start := time.Now()
	b, err := Build(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	fmt.Printf("e2e: built xygroup and nats-server in %v\n", time.Since(start).Round(time.Second))
	SetBinaries(b, *keep)
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}
