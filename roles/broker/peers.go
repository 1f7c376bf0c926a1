package broker

import (
	"maps"
	"sync"
	"time"

	"github.com/go-zeromq/zmq4"

	"chat/transport"
)

// backPeers watches the connections of the back-end socket. zmq4's ROUTER
// says nothing of its connections: not when a peer connects (a REP server
// never sends first, so it would never be known), nor when one closes (a
// dead server would get requests until its heartbeat timeout). But zmq4
// hands each connection to the socket's Security for the handshake, with
// the peer's metadata (Socket-Type, Identity) filled in once the peer's
// READY is read. backPeers is that Security: zmq4's NULL mechanism, the
// same bytes on the wire, which also keeps the connection, so the router
// can poll it: Conn.Closed turns true once zmq4 has read the end of the
// connection, after every message on it.
type backPeers struct {
	transport.NullMechanism
	mu    sync.Mutex
	conns []*backConn
	gen   uint64
}

// backConn is one handshaken connection.
type backConn struct {
	conn       *zmq4.Conn
	id         string // the routing identity zmq4's ROUTER gives its messages
	socketType string // the peer's ZMTP Socket-Type: DEALER (ours), REP (a standard server), ...
	gen        uint64 // tells apart connections under the same identity
	at         time.Time
	reported   bool // check returned it as up
}

// Handshake is zmq4's NULL handshake (READY both ways), then records the
// connection. The peer's READY is read first (the guarded transport hands
// zmq4 only connections whose READY it has read already), so the back end
// can present itself to a REP peer as the standard's broker does: as a
// DEALER. ZMTP lets a REP talk to REQ and DEALER only; a ROUTER addressing
// each REP by its identity is a DEALER on the wire (the frames are the
// same), and zmq4 is told the peer is a DEALER for its own check.
func (p *backPeers) Handshake(conn *zmq4.Conn, server bool) error {
	if err := transport.RecvReady(conn); err != nil {
		return err
	}
	ours := conn.Meta
	socketType := conn.Peer.Meta["Socket-Type"]
	if socketType == string(zmq4.Rep) {
		ours = maps.Clone(conn.Meta)
		ours["Socket-Type"] = string(zmq4.Dealer)
		conn.Peer.Meta["Socket-Type"] = string(zmq4.Dealer)
	}
	if err := transport.SendReady(conn, ours); err != nil {
		return err
	}
	c := &backConn{conn: conn, id: conn.Peer.Meta["Identity"], socketType: socketType, at: time.Now()}
	if c.id == "" {
		return nil // only over plain tcp: zmq4 picks an identity later, which we cannot know
	}
	p.mu.Lock()
	p.gen++
	c.gen = p.gen
	p.conns = append(p.conns, c)
	p.mu.Unlock()
	return nil
}

// peerEvent is a connection that came up (handshaken at least settle
// ago: zmq4 adds a connection to the socket just after its handshake, and
// a message sent to it before that is lost) or went down (zmq4 read its
// end).
type peerEvent struct {
	c  *backConn
	up bool
}

// check returns what happened since the last check, in order: a
// connection always comes up before it goes down. Closed connections are
// forgotten.
func (p *backPeers) check(now time.Time, settle time.Duration) []peerEvent {
	p.mu.Lock()
	defer p.mu.Unlock()
	var events []peerEvent
	kept := p.conns[:0]
	for _, c := range p.conns {
		closed := c.conn.Closed()
		if !c.reported && (closed || now.Sub(c.at) >= settle) {
			c.reported = true
			events = append(events, peerEvent{c: c, up: true})
		}
		if closed {
			events = append(events, peerEvent{c: c})
			continue
		}
		kept = append(kept, c)
	}
	clear(p.conns[len(kept):])
	p.conns = kept
	return events
}
