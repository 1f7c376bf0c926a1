// Package poll is the tests' way to wait: poll a condition until it holds
// or a deadline passes (checkFor, in nats-server's words), never a fixed
// sleep. It imports nothing of the project, so any package's tests can use
// it; internal/clustertest builds on it.
package poll

import (
	"strings"
	"sync"
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

// Output collects what several goroutines (or a child process) write,
// safe for the test to read meanwhile: what WaitFor conditions often look
// into.
type Output struct {
	mu sync.Mutex
	b  strings.Builder
}

func (o *Output) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.b.Write(p)
}

// String returns everything written so far.
func (o *Output) String() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.b.String()
}

// Closed reports, without waiting, whether ch is closed.
func Closed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}
