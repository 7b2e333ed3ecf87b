package e2e

import (
	"bytes"
	"context"
	"errors"
	"os/exec"
	"time"
)

// Run runs a one-shot xygroup command (cancel, publish, status, ...) against
// the scenario's NATS, as an operator would, for at most d. It returns the
// command's output and exit code (-1: it did not run or did not end in time).
func (h *Harness) Run(d time.Duration, args ...string) (stdout, stderr string, code int) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	cmd := exec.CommandContext(ctx, h.Bins.Xygroup, args...)
	cmd.Env = append(baseEnv(), "NATS_URL="+h.NATSURL)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	cmd.WaitDelay = 5 * time.Second
	err := cmd.Run()
	code = 0
	if err != nil {
		code = -1
		var exit *exec.ExitError
		if errors.As(err, &exit) && ctx.Err() == nil {
			code = exit.ExitCode()
		} else {
			errOut.WriteString(err.Error())
		}
	}
	return out.String(), errOut.String(), code
}
