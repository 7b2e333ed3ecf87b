package worker_test

import (
	"testing"

	"github.com/xygroup/xygroup/worker"
	"github.com/xygroup/xygroup/worker/contract"
)

// The replay header is declared beside the pipeline that honours it; publishers
// take it from the contract, so the two must not drift apart.
func TestReplayHeaderIsTheContracts(t *testing.T) {
	if worker.HeaderReplay != contract.HeaderReplay {
		t.Fatalf("worker.HeaderReplay %q, contract.HeaderReplay %q", worker.HeaderReplay, contract.HeaderReplay)
	}
}
