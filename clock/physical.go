package clock

import (
	"sync"
	"time"
)

// Source tells the time. Production code uses System; tests inject a fake.
type Source interface {
	Now() time.Time
}

// System is the machine's real clock.
type System struct{}

// Now returns time.Now().
func (System) Now() time.Time { return time.Now() }

// Physical is a process's physical clock: a Source plus a fixed skew (set
// by --clock-skew, to demonstrate clock synchronisation) plus an offset that
// clock synchronisation adjusts. The machine's clock itself is never changed.
type Physical struct {
	src  Source
	skew time.Duration

	mu     sync.Mutex
	offset time.Duration
}

// NewPhysical returns a physical clock reading src shifted by skew.
func NewPhysical(src Source, skew time.Duration) *Physical {
	if src == nil {
		src = System{}
	}
	return &Physical{src: src, skew: skew}
}

// Now returns the adjusted time: source + skew + offset.
func (p *Physical) Now() time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.src.Now().Add(p.skew + p.offset)
}

// Adjust adds delta to the offset and returns the new total offset.
func (p *Physical) Adjust(delta time.Duration) time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.offset += delta
	return p.offset
}

// Offset returns the total adjustment applied so far.
func (p *Physical) Offset() time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.offset
}
