// Package ratelimit bounds how fast each client may send requests: a token
// bucket per client, refilled at Rate tokens per second up to Burst. A
// request takes one token; a client with none left is refused until the
// bucket refills. Like an IRC server's flood control, it keeps one
// runaway client from taking the server away from everyone else.
//
// The limiter is pure logic: the caller passes the time, so tests drive it
// with a fake clock.
package ratelimit

import (
	"errors"
	"sync"
	"time"
)

// Config configures a Limiter.
type Config struct {
	Rate  float64       // tokens per second per client; 0 turns limiting off
	Burst int           // the most tokens a client can save up
	Idle  time.Duration // a client unseen this long is forgotten
}

// DefaultConfig allows each client 2,000 requests per second, in bursts
// of up to 4,000: far above any person or bot, well below a flood.
func DefaultConfig() Config {
	return Config{Rate: 2000, Burst: 4000, Idle: time.Minute}
}

// Validate reports a config that cannot work.
func (c Config) Validate() error {
	switch {
	case c.Rate < 0:
		return errors.New("ratelimit: rate must not be negative")
	case c.Rate > 0 && c.Burst < 1:
		return errors.New("ratelimit: burst must be at least 1")
	case c.Rate > 0 && c.Idle <= 0:
		return errors.New("ratelimit: idle must be positive")
	}
	return nil
}

// Limiter holds a bucket per client. It is safe for concurrent use.
type Limiter struct {
	cfg Config

	mu        sync.Mutex
	buckets   map[string]*bucket
	lastSweep time.Time
}

type bucket struct {
	tokens float64
	seen   time.Time
}

// New returns a limiter.
func New(cfg Config) *Limiter {
	return &Limiter{cfg: cfg, buckets: map[string]*bucket{}}
}

// Allow takes a token from client's bucket at time now and reports
// whether there was one.
func (l *Limiter) Allow(client string, now time.Time) bool {
	if l == nil || l.cfg.Rate == 0 {
		return true
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.sweep(now)
	b, ok := l.buckets[client]
	if !ok {
		b = &bucket{tokens: float64(l.cfg.Burst), seen: now}
		l.buckets[client] = b
	}
	b.tokens = min(float64(l.cfg.Burst), b.tokens+now.Sub(b.seen).Seconds()*l.cfg.Rate)
	b.seen = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// Clients returns how many clients the limiter remembers.
func (l *Limiter) Clients() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.buckets)
}

// sweep forgets clients idle for longer than Idle, at most once per Idle,
// so memory follows the clients that are active.
func (l *Limiter) sweep(now time.Time) {
	if now.Sub(l.lastSweep) < l.cfg.Idle {
		return
	}
	l.lastSweep = now
	for client, b := range l.buckets {
		if now.Sub(b.seen) > l.cfg.Idle {
			delete(l.buckets, client)
		}
	}
}
