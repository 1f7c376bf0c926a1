package ratelimit

import (
	"sync"
	"time"
)

// Failures limits failed attempts (wrong passwords) per key: at most Max
// failures in a window of Window, counted from the key's first failure
// in it; then the key is blocked until the window ends. Unlike Limiter,
// only failures count, so an honest user is never slowed down.
type Failures struct {
	max    int
	window time.Duration

	mu   sync.Mutex
	keys map[string]*failWindow
}

type failWindow struct {
	start time.Time
	n     int
}

// NewFailures returns a limiter of max failures per window per key
// (max 0: no limit).
func NewFailures(max int, window time.Duration) *Failures {
	return &Failures{max: max, window: window, keys: map[string]*failWindow{}}
}

// Blocked reports whether key has used up its failures at now, and how
// long until it may try again.
func (f *Failures) Blocked(key string, now time.Time) (retryAfter time.Duration, blocked bool) {
	if f == nil || f.max <= 0 {
		return 0, false
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	w := f.keys[key]
	if w == nil || now.Sub(w.start) >= f.window || w.n < f.max {
		return 0, false
	}
	return w.start.Add(f.window).Sub(now), true
}

// Fail counts one failure of key at now.
func (f *Failures) Fail(key string, now time.Time) {
	if f == nil || f.max <= 0 {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.keys) >= 1024 {
		f.sweep(now)
	}
	w := f.keys[key]
	if w == nil || now.Sub(w.start) >= f.window {
		w = &failWindow{start: now}
		f.keys[key] = w
	}
	w.n++
}

// sweep forgets the keys whose window has ended.
func (f *Failures) sweep(now time.Time) {
	for key, w := range f.keys {
		if now.Sub(w.start) >= f.window {
			delete(f.keys, key)
		}
	}
}
