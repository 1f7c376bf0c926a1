// Package poll is the tests' way to wait: poll a condition until it holds
// or a deadline passes (checkFor, in nats-server's words), never a fixed
// sleep. It imports nothing of the project, so any package's tests can use
// it; internal/clustertest builds on it.
package poll

import (
	"testing"
	"time"
)

// Interval is how often WaitFor checks its condition.
const Interval = 20 * time.Millisecond

// WaitFor polls cond until it holds, or fails the test after timeout.
func WaitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(Interval)
	}
}
