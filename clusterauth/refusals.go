package clusterauth

import (
	"log/slog"
	"sync"
	"time"
)

// Refusals logs the messages a member refused for want of the key, at
// most once per interval: a forger sending thousands of messages gets
// one warning line per interval, with the count of those not shown.
type Refusals struct {
	log   *slog.Logger
	every time.Duration

	mu      sync.Mutex
	last    time.Time
	skipped int
}

// NewRefusals returns a Refusals logging to log at most once per
// m.Config().LogEvery (nil m: an open cluster, which refuses nothing).
func NewRefusals(log *slog.Logger, m *Member) *Refusals {
	r := &Refusals{log: log}
	if m != nil {
		r.every = m.Config().LogEvery
	}
	return r
}

// Refused logs one refusal (what was refused, why, and attributes), or
// counts it when a line was written less than every ago.
func (r *Refusals) Refused(what string, err error, attrs ...any) {
	now := time.Now()
	r.mu.Lock()
	if !r.last.IsZero() && now.Sub(r.last) < r.every {
		r.skipped++
		r.mu.Unlock()
		return
	}
	skipped := r.skipped
	r.last, r.skipped = now, 0
	r.mu.Unlock()
	args := append([]any{"err", err}, attrs...)
	if skipped > 0 {
		args = append(args, "refused_since_last_line", skipped)
	}
	r.log.Warn("refused "+what+": it does not prove the cluster key", args...)
}

// OpenWarning is the line every role logs once at start without a key.
const OpenWarning = "no cluster key: the cluster runs open, any server may join (set --cluster-key or CHAT_CLUSTER_KEY)"
