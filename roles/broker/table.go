package broker

import (
	"chat/proto"
	"slices"
	"time"
)

// table is the request router's state, with no sockets and no goroutines:
// which servers are alive, whose turn it is, and which requests wait for
// which server. The broker loop drives it with events and the current
// time, so tests can drive it with a fake clock.
//
// Servers are of two kinds. Ours connect a DEALER, heartbeat, and are
// known from their first message; they are taken out when they say
// goodbye, when their connection closes, when a new connection of the
// same server (same name) replaces them, or when they fall silent. A
// standard server connects a REP socket and never sends first: it is
// known from its connection (the ZMTP handshake says REP), and, with no
// heartbeats, its liveness is its connection and its answers: a REP that
// holds a request for serverTimeout without answering anything is taken
// out, and tried again serverTimeout later (twice as late after each
// further time out, up to 32 times, until it answers).
type table struct {
	serverTimeout  time.Duration // silence after which a server is taken out
	requestTimeout time.Duration // wait after which a request is answered with an error
	grace          time.Duration // wait for replies already on their way from a server that is gone

	servers map[string]*server
	conns   map[string]uint64    // identity -> the connection that has it now (0: not known)
	gone    map[string]time.Time // identities whose connection closed or that said goodbye: they never rejoin
	ring    []string             // live servers in round-robin order
	next    int                  // index in ring of the next server to use
	pending map[uint64]*pending  // requests sent to a server, by sequence number
	seq     uint64
	leader  string // the server whose heartbeats say it orders the cluster's writes ("" : none)
}

// server is one connection of a server to the broker's back end.
type server struct {
	id      string
	name    string    // its heartbeats' "user" ("" for a REP server)
	rep     bool      // a REP socket: no heartbeats, framed [seq][""][body]
	seen    time.Time // last message from it
	live    bool      // in the ring
	leaving bool      // said goodbye: gets no requests, answers what it holds
	retryAt time.Time // a REP taken out by a timeout is tried again from then
	fails   int       // timeouts of a REP since its last answer: each doubles its time out
}

// pending is a request handed to a server and not yet answered.
type pending struct {
	seq      uint64
	server   string
	rep      bool     // server is a REP socket
	route    [][]byte // the client's routing frames on the front socket
	body     []byte
	sent     time.Time
	deadline time.Time
}

func newTable(serverTimeout, requestTimeout time.Duration) *table {
	return &table{
		serverTimeout:  serverTimeout,
		requestTimeout: requestTimeout,
		grace:          50 * time.Millisecond,
		servers:        map[string]*server{},
		conns:          map[string]uint64{},
		gone:           map[string]time.Time{},
		pending:        map[uint64]*pending{},
	}
}

// heard records a message from server id: a reply, or (with isHeartbeat)
// a heartbeat whose "user" is name. It reports whether id joined now, and
// the identities it replaces: earlier connections of the same server
// name, which will never answer (a server runs one connection at a time;
// after a restart or a re-dial the old one is closed). Their requests are
// answered with a retryable error after the grace period.
func (t *table) heard(id, name string, isHeartbeat bool, now time.Time) (joined bool, replaced []string) {
	s := t.servers[id]
	if s == nil {
		if _, dead := t.gone[id]; dead {
			return false, nil // a message that was on its way when the connection closed
		}
		s = &server{id: id}
		t.servers[id] = s
	}
	s.seen = now
	s.fails = 0
	if isHeartbeat && name != "" && !s.rep {
		s.name = name
		for other, o := range t.servers {
			if other != id && o.name == name && !o.rep {
				t.drop(o, now, t.grace)
				replaced = append(replaced, other)
			}
		}
	}
	if !s.live && !s.leaving {
		t.join(s)
		joined = true
	}
	return joined, replaced
}

// connected records connection conn (nonzero) from id, whose peer is a
// socket of type socketType (from the ZMTP handshake). A REP server joins
// now; any other peer joins when it first sends (a heartbeat).
func (t *table) connected(id, socketType string, conn uint64, now time.Time) (joined bool) {
	delete(t.gone, id) // a new connection under an identity used before
	t.conns[id] = conn
	if socketType != "REP" {
		return false
	}
	s := &server{id: id, rep: true, seen: now}
	if old := t.servers[id]; old != nil {
		t.drop(old, now, 0)
	}
	t.servers[id] = s
	t.join(s)
	return true
}

// bye records that id said goodbye: it gets no more requests, and has
// serverTimeout to answer those it holds (it answers them before it
// closes). It reports whether id was known.
func (t *table) bye(id string, now time.Time) bool {
	s := t.servers[id]
	if s == nil {
		return false
	}
	s.leaving = true
	t.leave(s)
	t.shorten(id, now.Add(t.serverTimeout))
	return true
}

// disconnected records that connection conn of id closed: it is taken
// out at once, and the requests it held are answered after the grace
// period (replies it sent before closing are still being read). It
// reports whether id was in the ring. A connection that no longer owns id
// (a newer one took it over) changes nothing.
func (t *table) disconnected(id string, conn uint64, now time.Time) (wasLive bool) {
	if owner, ok := t.conns[id]; ok && owner != conn {
		return false
	}
	delete(t.conns, id)
	s := t.servers[id]
	if s == nil {
		t.gone[id] = now
		return false
	}
	wasLive = s.live
	t.drop(s, now, t.grace)
	return wasLive
}

// drop forgets s: out of the ring, never to rejoin under its identity
// (until a new connection uses it), its requests lost after wait.
func (t *table) drop(s *server, now time.Time, wait time.Duration) {
	t.leave(s)
	delete(t.servers, s.id)
	t.gone[s.id] = now
	t.shorten(s.id, now.Add(wait))
}

// shorten brings the deadline of every request held by id to at most d.
func (t *table) shorten(id string, d time.Time) {
	for _, p := range t.pending {
		if p.server == id && p.deadline.After(d) {
			p.deadline = d
		}
	}
}

func (t *table) join(s *server) {
	if !s.live {
		s.live = true
		t.ring = append(t.ring, s.id)
	}
}

func (t *table) leave(s *server) {
	if s.live {
		s.live = false
		t.ring = slices.DeleteFunc(t.ring, func(x string) bool { return x == s.id })
	}
}

// assign picks the next live server, round-robin, for a request and
// records it as pending. ok is false when no server is alive.
//
// A write (login, channel, publish, message) goes to the server that
// orders the cluster's writes, when one is live: any other would forward
// it there (measured: a third fewer syscalls per write with three
// servers). Reads are spread round-robin, and so is everything while a
// standard REP server is live (a mixed lab: each implementation keeps its
// own data, and the standard's broker spreads every request).
func (t *table) assign(route [][]byte, body []byte, now time.Time) (p *pending, ok bool) {
	if len(t.ring) == 0 {
		return nil, false
	}
	var id string
	if t.leader != "" && isWrite(body) && slices.Contains(t.ring, t.leader) && !t.anyREP() {
		id = t.leader
	} else {
		t.next %= len(t.ring)
		id = t.ring[t.next]
		t.next++
	}
	t.seq++
	p = &pending{seq: t.seq, server: id, rep: t.servers[id].rep, route: route, body: body, sent: now, deadline: now.Add(t.requestTimeout)}
	t.pending[p.seq] = p
	return p, true
}

// anyREP reports whether a REP server (another implementation) is live.
func (t *table) anyREP() bool {
	for _, id := range t.ring {
		if t.servers[id].rep {
			return true
		}
	}
	return false
}

// leads records whether server id says it orders the cluster's writes.
func (t *table) leads(id string, leader bool) {
	switch {
	case leader:
		t.leader = id
	case t.leader == id:
		t.leader = ""
	}
}

// isWrite reports whether a request changes state (it goes to the leader).
func isWrite(body []byte) bool {
	switch proto.PeekService(body) {
	case proto.Login, proto.Channel, proto.Publish, proto.Message, proto.Logout:
		return true
	}
	return false
}

// complete removes and returns the pending request answered by a reply.
func (t *table) complete(seq uint64) (*pending, bool) {
	p, ok := t.pending[seq]
	delete(t.pending, seq)
	return p, ok
}

// completeOldest removes and returns the oldest request held by server
// id: the one a REP socket that lost the envelope answers (a REP answers
// in order).
func (t *table) completeOldest(id string) (*pending, bool) {
	var oldest *pending
	for _, p := range t.pending {
		if p.server == id && (oldest == nil || p.seq < oldest.seq) {
			oldest = p
		}
	}
	if oldest == nil {
		return nil, false
	}
	delete(t.pending, oldest.seq)
	return oldest, true
}

// known reports whether id is a server the table has heard from and not
// forgotten.
func (t *table) known(id string) bool { return t.servers[id] != nil }

// isREP reports whether id is a REP server.
func (t *table) isREP(id string) bool {
	s := t.servers[id]
	return s != nil && s.rep
}

// expire takes out servers silent for longer than serverTimeout (for a
// REP server: holding a request that long with no answer at all), brings
// back REP servers whose time out is over, and returns the servers taken
// out, those back, and every request that is now lost: held by a server
// taken out, or waiting past its deadline.
func (t *table) expire(now time.Time) (gone, back []string, lost []*pending) {
	stuck := map[string]bool{}
	for _, p := range t.pending {
		if s := t.servers[p.server]; s != nil && s.rep && s.live && now.Sub(p.sent) > t.serverTimeout && !s.seen.After(p.sent) {
			stuck[p.server] = true
		}
	}
	for id, s := range t.servers {
		switch {
		case s.rep && stuck[id]:
			t.leave(s)
			s.retryAt = now.Add(t.serverTimeout << min(s.fails, 5)) // 1, 2, 4 ... 32 server timeouts
			s.fails++
			gone = append(gone, id)
		case s.rep && !s.live && !s.leaving && !now.Before(s.retryAt):
			t.join(s)
			back = append(back, id)
		case !s.rep && now.Sub(s.seen) > t.serverTimeout:
			t.leave(s)
			delete(t.servers, id)
			gone = append(gone, id)
		}
	}
	for seq, p := range t.pending {
		if slices.Contains(gone, p.server) || now.After(p.deadline) {
			lost = append(lost, p)
			delete(t.pending, seq)
		}
	}
	for id, at := range t.gone {
		if now.Sub(at) > 2*t.serverTimeout+t.requestTimeout {
			delete(t.gone, id) // no message of that connection is on its way any more
		}
	}
	slices.SortFunc(lost, func(a, b *pending) int { return int(a.seq - b.seq) })
	slices.Sort(gone)
	return gone, back, lost
}

// live returns the live servers in round-robin order.
func (t *table) live() []string { return slices.Clone(t.ring) }

// heartbeatTargets returns the live servers that heartbeat (not REP).
func (t *table) heartbeatTargets() []string {
	var out []string
	for _, id := range t.ring {
		if !t.servers[id].rep {
			out = append(out, id)
		}
	}
	return out
}
