// Package clock holds the two clocks every process of the system keeps:
// the Lamport logical clock (this file) and the physical clock that the
// Berkeley algorithm adjusts (physical.go).
package clock

import "sync"

// Lamport is a Lamport logical clock, safe for concurrent use.
//
// The rules are the ones of the protocol: increment before every send
// (Tick), and on every receive set the clock to max(local, received) + 1
// (Observe).
type Lamport struct {
	mu sync.Mutex
	t  uint64
}

// Tick increments the clock for a send and returns the new value, which the
// message carries in its `clock` field.
func (l *Lamport) Tick() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.t++
	return l.t
}

// Observe merges a received clock value: the clock becomes
// max(local, received) + 1. It returns the new value.
func (l *Lamport) Observe(received uint64) uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.t = max(l.t, received) + 1
	return l.t
}

// Now returns the current value without changing it.
func (l *Lamport) Now() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.t
}
