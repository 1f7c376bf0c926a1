// Package fakeclock is a clock.Source for tests: it stands still until the
// test moves it, so that timeouts and expiries happen when the test says.
// It imports nothing of the project, so any package's tests can use it.
package fakeclock

import (
	"sync"
	"time"
)

// Clock is a clock the test moves by hand. It is safe for concurrent use.
type Clock struct {
	mu  sync.Mutex
	now time.Time
}

// New returns a clock that reads start until it is advanced.
func New(start time.Time) *Clock { return &Clock{now: start} }

// Now returns the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Advance moves the clock forward by d.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}
