package replication

import "time"

// Reads. A coordinator that was replaced without knowing it (cut off with
// a minority) still holds a log and would serve stale reads from it. So
// before a read, the coordinator makes sure it still leads: it sends every
// follower an Append (Heartbeat) and serves the read only once a majority,
// itself included, has acknowledged an Append sent after the read arrived
// (Confirmed) — the ReadIndex of Raft. Since a follower that promised a
// newer epoch refuses Append, such a majority means no newer coordinator
// can have committed anything yet.

// Heartbeat makes a leader send an Append now to every follower that has
// nothing in flight, instead of at the next HeartbeatInterval.
func (n *Node) Heartbeat(now time.Time) {
	if n.role != Leader {
		return
	}
	for _, f := range n.followers {
		if !f.inFlight {
			f.lastSent, f.retryAt = time.Time{}, time.Time{}
		}
	}
	n.replicate(now)
}

// Confirmed reports whether this node leads and a majority of the
// servers, itself included, acknowledged an Append of its epoch sent at
// or after since.
func (n *Node) Confirmed(since time.Time) bool {
	if n.role != Leader {
		return false
	}
	acks := 1 // itself
	for _, p := range n.peers {
		if f := n.followers[p]; f != nil && !f.ackedAt.Before(since) {
			acks++
		}
	}
	return acks >= Majority(n.cfg.Replicas)
}
