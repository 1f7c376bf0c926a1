package clusterauth

import (
	"log/slog"
	"sync"
	"time"
)

// Refusals logs the messages a member refused for want of the key, at
// most once per interval for each kind of message: a forger sending
// thousands of messages gets one warning line per interval, with the
// count of those not shown, and does not hide the refusals of another
// kind.
type Refusals struct {
	log   *slog.Logger
	every time.Duration

	mu    sync.Mutex
	kinds map[string]*refusalKind
}

// refusalKind is the log state of one kind of refused message.
type refusalKind struct {
	last    time.Time // when its last line was written
	skipped int       // refusals since, not logged
}

// NewRefusals returns a Refusals logging to log at most once per
// m.Config().LogEvery for each kind (nil m: an open cluster, which
// refuses nothing).
func NewRefusals(log *slog.Logger, m *Member) *Refusals {
	r := &Refusals{log: log, kinds: map[string]*refusalKind{}}
	if m != nil {
		r.every = m.Config().LogEvery
	}
	return r
}

// Refused logs one refusal of a message of kind what, with why and
// attributes, or counts it when a line for what was written less than
// the interval ago.
func (r *Refusals) Refused(what string, err error, attrs ...any) {
	now := time.Now()
	r.mu.Lock()
	k := r.kinds[what]
	if k == nil {
		k = &refusalKind{}
		r.kinds[what] = k
	}
	if !k.last.IsZero() && now.Sub(k.last) < r.every {
		k.skipped++
		r.mu.Unlock()
		return
	}
	skipped := k.skipped
	k.last, k.skipped = now, 0
	r.mu.Unlock()
	args := append([]any{"err", err}, attrs...)
	if skipped > 0 {
		args = append(args, "refused_since_last_line", skipped)
	}
	r.log.Warn("refused "+what+": it does not prove the cluster key", args...)
}

// OpenWarning is the line every role logs once at start without a key.
const OpenWarning = "no cluster key: the cluster runs open, any server may join (set --cluster-key or CHAT_CLUSTER_KEY)"
