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

// knownFailures are the scenarios that fail on the current code, with the reason.
// They are skipped unless -known-failures is given. Remove a line when its fix
// lands.
var knownFailures = map[string]string{}

// knownFailure skips the scenario when it is a known failure and
// -known-failures is not given.
func knownFailure(t *testing.T) {
	t.Helper()
	if why, ok := knownFailures[t.Name()]; ok && !*knownFailuresFlag {
		t.Skipf("known failure (%s); run with -known-failures", why)
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
