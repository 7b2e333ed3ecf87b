package e2e

import (
	"fmt"
	"time"
)

// poll calls f every interval until it returns nil or d has passed; it returns
// f's last error.
func poll(d, interval time.Duration, f func() error) error {
	deadline := time.Now().Add(d)
	for {
		err := f()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("after %v: %w", d, err)
		}
		time.Sleep(interval)
	}
}

// until waits up to d for cond; it reports whether cond held.
func until(d, interval time.Duration, cond func() bool) bool {
	return poll(d, interval, func() error {
		if cond() {
			return nil
		}
		return fmt.Errorf("condition not met")
	}) == nil
}
