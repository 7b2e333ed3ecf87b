package worker

import "github.com/xygroup/xygroup/worker/ratelimit"

// Limiter grants API calls; see package ratelimit. The default is the
// cluster-wide ratelimit.Cluster.
type Limiter = ratelimit.Limiter

// WaitOption tunes one Limiter.Wait; see ratelimit.Queued.
type WaitOption = ratelimit.WaitOption

// Priority orders API calls competing for one budget.
type Priority = ratelimit.Priority

// Priorities: live first, then retries, probes, replays.
const (
	PriorityLive   = ratelimit.Live
	PriorityRetry  = ratelimit.Retry
	PriorityReplay = ratelimit.Replay
	PriorityProbe  = ratelimit.Probe
)
