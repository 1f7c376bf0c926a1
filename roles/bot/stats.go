package bot

import (
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// Summary is the outcome of a run.
type Summary struct {
	Sent     int64         // messages sent
	Acked    int64         // messages the server acknowledged
	Errors   int64         // requests of any service that failed: "erro" replies and no reply at all
	Received int64         // publications delivered to the bots' subscriptions
	Answered int64         // requests of any service that got a reply, "erro" included
	P50, P99 time.Duration // latency of acknowledged messages, from send to reply
	Elapsed  time.Duration
}

// Rate returns the acknowledged messages per second.
func (s Summary) Rate() float64 {
	if s.Elapsed <= 0 {
		return 0
	}
	return float64(s.Acked) / s.Elapsed.Seconds()
}

// String returns the summary as one line.
func (s Summary) String() string {
	return fmt.Sprintf("sent=%d acked=%d errors=%d received=%d in %v (%.1f msg/s) latency p50=%v p99=%v",
		s.Sent, s.Acked, s.Errors, s.Received, s.Elapsed.Round(10*time.Millisecond), s.Rate(), roundLatency(s.P50), roundLatency(s.P99))
}

// roundLatency keeps three significant digits or so: 1.23ms, 45.6µs.
func roundLatency(d time.Duration) time.Duration {
	switch {
	case d >= time.Second:
		return d.Round(10 * time.Millisecond)
	case d >= 10*time.Millisecond:
		return d.Round(100 * time.Microsecond)
	case d >= 100*time.Microsecond:
		return d.Round(10 * time.Microsecond)
	}
	return d.Round(100 * time.Nanosecond)
}

// stats is what every bot of a run adds to. It is safe for concurrent use.
type stats struct {
	start                         time.Time
	sent, acked, errors, received atomic.Int64
	answered                      atomic.Int64
	mu                            sync.Mutex
	latency                       histogram
}

// ack records an acknowledged message and its latency.
func (s *stats) ack(latency time.Duration) {
	s.acked.Add(1)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.latency.record(latency)
}

// summary returns the numbers so far.
func (s *stats) summary() Summary {
	s.mu.Lock()
	defer s.mu.Unlock()
	return Summary{
		Sent:     s.sent.Load(),
		Acked:    s.acked.Load(),
		Errors:   s.errors.Load(),
		Received: s.received.Load(),
		Answered: s.answered.Load(),
		P50:      s.latency.percentile(0.50),
		P99:      s.latency.percentile(0.99),
		Elapsed:  time.Since(s.start),
	}
}

// statLine is the live line printed every period: totals so far, the rate
// of acknowledged messages over the last period, and latency so far.
func statLine(now, last Summary) string {
	period := now.Elapsed - last.Elapsed
	rate := 0.0
	if period > 0 {
		rate = float64(now.Acked-last.Acked) / period.Seconds()
	}
	return fmt.Sprintf("[%v] sent=%d acked=%d errors=%d received=%d %.1f msg/s p50=%v p99=%v",
		now.Elapsed.Round(time.Second), now.Sent, now.Acked, now.Errors, now.Received, rate, roundLatency(now.P50), roundLatency(now.P99))
}
