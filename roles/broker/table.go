package broker

import (
	"slices"
	"time"
)

// table is the request router's state, with no sockets and no goroutines:
// which servers are alive, whose turn it is, and which requests wait for
// which server. The broker loop drives it with events and the current
// time, so tests can drive it with a fake clock.
type table struct {
	serverTimeout  time.Duration // silence after which a server is taken out
	requestTimeout time.Duration // wait after which a request is answered with an error

	servers map[string]time.Time // identity -> last heard from
	ring    []string             // live servers in round-robin order
	next    int                  // index in ring of the next server to use
	pending map[uint64]*pending  // requests sent to a server, by sequence number
	seq     uint64
}

// pending is a request handed to a server and not yet answered.
type pending struct {
	seq      uint64
	server   string
	route    [][]byte // the client's routing frames on the front socket
	body     []byte
	deadline time.Time
}

func newTable(serverTimeout, requestTimeout time.Duration) *table {
	return &table{
		serverTimeout:  serverTimeout,
		requestTimeout: requestTimeout,
		servers:        map[string]time.Time{},
		pending:        map[uint64]*pending{},
	}
}

// heard records a sign of life from server and reports whether it is new.
func (t *table) heard(server string, now time.Time) (added bool) {
	_, known := t.servers[server]
	t.servers[server] = now
	if !known {
		t.ring = append(t.ring, server)
	}
	return !known
}

// assign picks the next live server, round-robin, for a request and
// records it as pending. ok is false when no server is alive.
func (t *table) assign(route [][]byte, body []byte, now time.Time) (p *pending, ok bool) {
	if len(t.ring) == 0 {
		return nil, false
	}
	t.next %= len(t.ring)
	server := t.ring[t.next]
	t.next++
	t.seq++
	p = &pending{seq: t.seq, server: server, route: route, body: body, deadline: now.Add(t.requestTimeout)}
	t.pending[p.seq] = p
	return p, true
}

// complete removes and returns the pending request answered by a reply.
func (t *table) complete(seq uint64) (*pending, bool) {
	p, ok := t.pending[seq]
	delete(t.pending, seq)
	return p, ok
}

// expire takes out servers silent for longer than serverTimeout and
// returns them, with every request that is now lost: held by a server
// taken out, or waiting past its deadline.
func (t *table) expire(now time.Time) (gone []string, lost []*pending) {
	for server, seen := range t.servers {
		if now.Sub(seen) > t.serverTimeout {
			gone = append(gone, server)
			delete(t.servers, server)
		}
	}
	if len(gone) > 0 {
		t.ring = slices.DeleteFunc(t.ring, func(s string) bool { return slices.Contains(gone, s) })
	}
	for seq, p := range t.pending {
		if slices.Contains(gone, p.server) || now.After(p.deadline) {
			lost = append(lost, p)
			delete(t.pending, seq)
		}
	}
	slices.SortFunc(lost, func(a, b *pending) int { return int(a.seq - b.seq) })
	return gone, lost
}

// live returns the live servers in round-robin order.
func (t *table) live() []string { return slices.Clone(t.ring) }
