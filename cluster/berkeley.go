package cluster

import (
	"context"
	"maps"
	"math"
	"slices"
	"sync"
	"time"

	"chat/clock"
)

// clockReply is a server's answer to `clock`: its clock in seconds
// (the standard) and in milliseconds (extension). Either may be missing.
type clockReply struct {
	Time   *float64 `msgpack:"time"`
	TimeMs *float64 `msgpack:"time_ms"`
}

// remote returns the time the reply carries, zero when it has none.
func (r clockReply) remote() time.Time {
	switch {
	case r.TimeMs != nil && finite(*r.TimeMs) && *r.TimeMs > 0:
		return time.UnixMicro(int64(*r.TimeMs * 1000))
	case r.Time != nil && finite(*r.Time) && *r.Time > 0:
		return time.UnixMicro(int64(*r.Time * 1e6))
	}
	return time.Time{}
}

// adjustMsg is the data of `adjust`: what the receiver adds to its clock,
// in seconds (the standard's form) and in milliseconds (ours).
type adjustMsg struct {
	Adjustment   float64 `msgpack:"adjustment"`
	AdjustmentMs float64 `msgpack:"adjustment_ms"`
}

// syncClocks runs one Berkeley round as the coordinator: it polls `clock`
// on every live server (itself included), computes each one's adjustment
// with clock.Berkeley and sends it.
func (n *Node) syncClocks() {
	defer func() {
		n.mu.Lock()
		n.syncing = false
		n.mu.Unlock()
	}()
	n.mu.Lock()
	var names []string
	for name := range n.peers {
		if n.isAlive(name) {
			names = append(names, name)
		}
	}
	n.mu.Unlock()
	slices.Sort(names)

	now := n.deps.Clock.Now()
	readings := []clock.Reading{{Server: n.cfg.Name, Sent: now, Received: now, Remote: now}}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, name := range names {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(n.ctx, n.cfg.PeerTimeout)
			defer cancel()
			sent := n.deps.Clock.Now()
			reply, err := n.call(ctx, name, ServiceClock, struct{}{})
			received := n.deps.Clock.Now()
			r := clock.Reading{Server: name, Sent: sent, Received: received}
			var cr clockReply
			if err == nil {
				if _, err = decodeMsg(reply, &cr); err == nil {
					r.Remote = cr.remote()
				}
			}
			mu.Lock()
			readings = append(readings, r)
			mu.Unlock()
		})
	}
	wg.Wait()
	round := clock.Berkeley(readings, n.cfg.Berkeley)
	n.mu.Lock()
	leading := n.leading
	n.mu.Unlock()
	if !leading {
		return // another server became coordinator meanwhile: its rounds count
	}
	n.log.Info("Berkeley round", "readings", len(readings), "average_ms", ms(round.Average), "excluded", round.Excluded, "unusable", round.Unusable)
	for _, name := range slices.Sorted(maps.Keys(round.Adjustments)) {
		adj := round.Adjustments[name]
		n.log.Info("Berkeley adjustment", "peer", name, "offset_ms", ms(round.Offsets[name]), "adjust_ms", ms(adj))
		if name == n.cfg.Name {
			n.deps.Clock.Adjust(adj)
			continue
		}
		ctx, cancel := context.WithTimeout(n.ctx, n.cfg.PeerTimeout)
		if _, err := n.call(ctx, name, ServiceAdjust, adjustMsg{Adjustment: adj.Seconds(), AdjustmentMs: ms(adj)}); err != nil {
			n.log.Warn("Berkeley adjustment not delivered", "peer", name, "err", err)
		}
		cancel()
	}
}

// ms is d in milliseconds, rounded to the microsecond.
func ms(d time.Duration) float64 { return math.Round(float64(d)/1e3) / 1e3 }
