package transport

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-zeromq/zmq4"
)

// Defaults of a PeerConfig; a zero field of the config means its default.
const (
	DefaultPeerTimeout     = time.Second
	DefaultPeerDialTimeout = time.Second
	DefaultPeerMaxInFlight = 64
)

var (
	// ErrPeerClosed is returned by Do once the Peer is closed, and to the
	// requests that were in flight when Close was called.
	ErrPeerClosed = errors.New("peer client closed")
	// ErrPeerLost is wrapped (together with ErrNoReply) in the error of a
	// request whose connection was lost while it waited: the peer closed
	// it, or another request found the peer silent for a whole Timeout.
	ErrPeerLost = errors.New("connection to peer lost")
)

// PeerConfig configures a Peer. A zero Timeout, DialTimeout or
// MaxInFlight means its default.
type PeerConfig struct {
	Endpoint    string        // the peer's endpoint (tcp://host:port)
	Timeout     time.Duration // how long one request waits for its reply (default 1s)
	DialTimeout time.Duration // bound on connecting (default 1s)
	MaxInFlight int           // requests in flight at once; more wait for a slot (default 64)
	// Identity, when set, is the DEALER's ZMTP routing identity: the
	// server's ROUTER sees it as the first frame of every request (and
	// routes the reply by it). It must be 1-255 bytes, must not start with
	// a 0x00 byte (reserved for generated identities), and should be
	// unique among the server's peers: the server replaces an identity
	// already in use by a connection it still holds (such as this Peer's
	// previous socket, until the server has noticed it is gone) with a
	// generated one. Empty: zmq4 generates a random one per socket.
	Identity string
}

// DefaultPeerConfig returns the config of a Peer to endpoint with every
// default filled in.
func DefaultPeerConfig(endpoint string) PeerConfig {
	return PeerConfig{
		Endpoint:    endpoint,
		Timeout:     DefaultPeerTimeout,
		DialTimeout: DefaultPeerDialTimeout,
		MaxInFlight: DefaultPeerMaxInFlight,
	}
}

// Validate reports a config that cannot work: an endpoint that is not
// tcp://host:port (a host to connect to, a port 1-65535), a negative
// timeout or MaxInFlight, or an Identity a server would not keep (over
// 255 bytes, or starting with 0x00).
func (c PeerConfig) Validate() error {
	if err := checkPeerEndpoint(c.Endpoint); err != nil {
		return err
	}
	switch {
	case c.Timeout < 0:
		return errors.New("peer: request timeout must be positive (or zero for the default)")
	case c.DialTimeout < 0:
		return errors.New("peer: dial timeout must be positive (or zero for the default)")
	case c.MaxInFlight < 0:
		return errors.New("peer: MaxInFlight must be positive (or zero for the default)")
	case len(c.Identity) > 255:
		return errors.New("peer: Identity is longer than 255 bytes")
	case len(c.Identity) > 0 && c.Identity[0] == 0:
		return errors.New("peer: Identity must not start with a 0x00 byte")
	}
	return nil
}

func (c PeerConfig) withDefaults() PeerConfig {
	if c.Timeout == 0 {
		c.Timeout = DefaultPeerTimeout
	}
	if c.DialTimeout == 0 {
		c.DialTimeout = DefaultPeerDialTimeout
	}
	if c.MaxInFlight == 0 {
		c.MaxInFlight = DefaultPeerMaxInFlight
	}
	return c
}

// checkPeerEndpoint accepts tcp://host:port (or the guarded scheme's
// form of it) with a host one can connect to.
func checkPeerEndpoint(ep string) error {
	rest, ok := strings.CutPrefix(ep, "tcp://")
	if !ok {
		rest, ok = strings.CutPrefix(ep, Scheme+"://")
	}
	if !ok {
		return fmt.Errorf("peer endpoint %q: want tcp://host:port", ep)
	}
	host, port, err := net.SplitHostPort(rest)
	if err != nil {
		return fmt.Errorf("peer endpoint %q: want tcp://host:port: %v", ep, err)
	}
	if host == "" || host == "*" || strings.ContainsAny(host, " /") {
		return fmt.Errorf("peer endpoint %q: no host to connect to", ep)
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 {
		return fmt.Errorf("peer endpoint %q: port %q is not 1-65535", ep, port)
	}
	return nil
}

// Peer sends requests to ONE peer (a server's ROUTER socket) over ONE
// DEALER socket, many in flight at once. zmq4's DEALER copies every
// message to every connected peer (ZMQ4-NOTES), so the socket is only ever
// connected to the one endpoint.
//
// Framing: a request goes out as [id][empty][body], id being 8 bytes,
// big-endian, unique per Peer. A ROUTER reads [identity][id][empty][body];
// SplitRoute takes everything before the body as the route, and the reply
// [identity][id][empty][reply] comes back to the DEALER as
// [id][empty][reply]. The empty frame is the delimiter a REQ would send,
// so a REP server (which keeps everything up to it as the envelope)
// answers too. The reply body is the last frame.
//
// One reader goroutine per socket owns Recv and hands each reply to the
// caller waiting for its id; replies nobody waits for any more (the caller
// timed out or gave up) are dropped.
//
// Recovery. zmq4 does not reliably notice a dead or restarted peer, so the
// socket is dropped, every request in flight on it fails at once (with
// ErrNoReply and ErrPeerLost) and the next Do dials a fresh one when:
//   - a request times out and nothing at all arrived on the socket since
//     it was sent (the peer looks dead, not merely slow for one request);
//     a timeout while other replies keep arriving keeps the socket;
//   - Recv fails (the connection was closed: a restarted peer is noticed
//     here at once);
//   - Send fails.
//
// Dialing runs in a goroutine of its own, never under the mutex. Callers
// that arrive while a dial is under way wait for it (each no longer than
// its ctx) and, if it fails, get its error without dialing again; the
// dial itself is bounded by DialTimeout. So a restarted peer is reachable
// again within about Timeout + DialTimeout.
//
// A Peer is safe for concurrent use.
type Peer struct {
	cfg     PeerConfig
	log     *slog.Logger
	ep      string        // cfg.Endpoint, for messages
	slots   chan struct{} // one token per request in flight
	ctx     context.Context
	cancel  context.CancelFunc
	closing chan struct{} // closed by Close
	nextID  atomic.Uint64
	wg      sync.WaitGroup // dial and reader goroutines

	mu     sync.Mutex
	closed bool
	conn   *peerConn // live socket, nil when none
	dial   *peerDial // dial under way, nil when none
	dials  int       // sockets connected so far
}

// peerDial is one dial; waiters read err once done is closed.
type peerDial struct {
	done chan struct{}
	err  error
}

// peerConn is one DEALER socket and the requests waiting on it.
type peerConn struct {
	sock   zmq4.Socket
	cancel context.CancelFunc // ends the socket's context: its reader closes it and exits

	// under Peer.mu
	pending  map[uint64]*peerCall
	received uint64 // messages received on the socket
	dead     bool
}

// peerCall is one request waiting for its reply.
type peerCall struct {
	ch   chan peerResult // buffered; written once, by whoever removes the call from pending
	seen uint64          // peerConn.received when the request was sent
}

type peerResult struct {
	body []byte
	err  error
}

// NewPeer returns a Peer; it connects lazily on the first request, and
// again after a failure.
func NewPeer(cfg PeerConfig, log *slog.Logger) (*Peer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Peer{
		cfg:     cfg,
		log:     log,
		ep:      Public(cfg.Endpoint),
		slots:   make(chan struct{}, cfg.MaxInFlight),
		ctx:     ctx,
		cancel:  cancel,
		closing: make(chan struct{}),
	}, nil
}

// Endpoint returns the peer's endpoint.
func (p *Peer) Endpoint() string { return p.cfg.Endpoint }

// Do sends req and returns the reply body. It makes one attempt, no
// retries (the caller decides): it returns ErrNoReply (wrapped) when the
// reply does not come within Timeout or the connection is lost meanwhile
// (then ErrPeerLost is wrapped too), ctx.Err() when ctx ends first, a
// wrapped dial error when the peer cannot be reached, ErrPeerClosed after
// Close. Waiting for a free slot (MaxInFlight) and for a dial is bounded
// by ctx; the reply wait by Timeout. Safe for concurrent use.
func (p *Peer) Do(ctx context.Context, req []byte) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	select {
	case p.slots <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-p.closing:
		return nil, ErrPeerClosed
	}
	defer func() { <-p.slots }()

	id := p.nextID.Add(1)
	c, call, err := p.register(ctx, id)
	if err != nil {
		return nil, err
	}
	idFrame := binary.BigEndian.AppendUint64(make([]byte, 0, 8), id)
	if err := c.sock.Send(zmq4.NewMsgFrom(idFrame, []byte{}, req)); err != nil {
		p.fail(c, fmt.Errorf("send to %s: %w", p.ep, err))
		r := <-call.ch // fail answered every call still pending, ours included
		return r.body, r.err
	}

	timer := time.NewTimer(p.cfg.Timeout)
	defer timer.Stop()
	select {
	case r := <-call.ch:
		return r.body, r.err
	case <-timer.C:
		return p.timedOut(c, id, call)
	case <-ctx.Done():
		if r, ok := p.forget(c, id, call); ok && r.err == nil {
			return r.body, nil // the reply won the race
		}
		return nil, ctx.Err()
	}
}

// register returns the live socket, dialing one if there is none, with
// call registered on it under id.
func (p *Peer) register(ctx context.Context, id uint64) (*peerConn, *peerCall, error) {
	for waited := 0; ; waited++ {
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			return nil, nil, ErrPeerClosed
		}
		if c := p.conn; c != nil {
			call := &peerCall{ch: make(chan peerResult, 1), seen: c.received}
			c.pending[id] = call
			p.mu.Unlock()
			return c, call, nil
		}
		d := p.dial
		if d == nil {
			if waited >= 2 { // twice connected, twice lost before we could send
				p.mu.Unlock()
				return nil, nil, fmt.Errorf("%w: %w: %s dropped the connection right after it was made", ErrNoReply, ErrPeerLost, p.ep)
			}
			d = &peerDial{done: make(chan struct{})}
			p.dial = d
			p.wg.Add(1)
			go p.connect(d)
		}
		p.mu.Unlock()
		select {
		case <-d.done:
		case <-ctx.Done():
			return nil, nil, ctx.Err()
		case <-p.closing:
			return nil, nil, ErrPeerClosed
		}
		if d.err != nil {
			return nil, nil, d.err
		}
	}
}

// connect dials a socket for d (one goroutine, owned by p.wg) and makes it
// the live one.
func (p *Peer) connect(d *peerDial) {
	defer p.wg.Done()
	sock, cancel, err := p.dialSocket()

	p.mu.Lock()
	p.dial = nil
	if err == nil && p.closed {
		err = ErrPeerClosed
	}
	if err != nil {
		d.err = err
		close(d.done)
		p.mu.Unlock()
		if sock != nil {
			cancel()
			sock.Close()
		}
		p.log.Debug("cannot connect to peer", "peer", p.ep, "err", err)
		return
	}
	c := &peerConn{sock: sock, cancel: cancel, pending: map[uint64]*peerCall{}}
	p.conn = c
	p.dials++
	p.wg.Add(1)
	go p.read(c)
	close(d.done)
	p.mu.Unlock()
	p.log.Debug("connected to peer", "peer", p.ep)
}

// dialSocket connects a DEALER to the peer, within DialTimeout even when
// the host does not answer at all. The socket lives until its cancel is
// called (or the Peer closes).
func (p *Peer) dialSocket() (zmq4.Socket, context.CancelFunc, error) {
	ctx, cancel := context.WithCancel(p.ctx)
	bound := time.AfterFunc(p.cfg.DialTimeout, cancel) // cancelling the socket's context aborts zmq4's dial loop
	opts := []zmq4.Option{zmq4.WithDialerTimeout(p.cfg.DialTimeout)}
	if p.cfg.Identity != "" {
		opts = append(opts, zmq4.WithID(zmq4.SocketIdentity(p.cfg.Identity)))
	}
	sock, err := DialSocket(ctx, zmq4.NewDealer, p.cfg.Endpoint, p.cfg.DialTimeout, opts...)
	if !bound.Stop() { // too late: the socket's context is gone
		if err == nil {
			sock.Close()
		}
		if p.ctx.Err() != nil {
			err = ErrPeerClosed
		} else {
			err = fmt.Errorf("connect to %s: not connected within %v", p.ep, p.cfg.DialTimeout)
		}
	}
	if err != nil {
		cancel()
		return nil, nil, err
	}
	return sock, cancel, nil
}

// read owns c's Recv until the socket's context ends, then closes the
// socket. A Recv error means the connection is gone (the socket has one).
func (p *Peer) read(c *peerConn) {
	defer p.wg.Done()
	defer c.sock.Close()
	for {
		msg, err := c.sock.Recv()
		if err != nil {
			if p.ctx.Err() != nil {
				err = ErrPeerClosed
			} else {
				err = fmt.Errorf("%w: %w: receive from %s: %v", ErrNoReply, ErrPeerLost, p.ep, err)
			}
			p.fail(c, err)
			return
		}
		if !p.deliver(c, msg.Frames) {
			return
		}
	}
}

// deliver hands a reply [id][empty][body] to the caller waiting for id.
// It reports false once c is dead.
func (p *Peer) deliver(c *peerConn, frames [][]byte) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if c.dead {
		return false
	}
	c.received++
	if len(frames) < 2 || len(frames[0]) != 8 {
		p.log.Debug("peer sent a message that is no reply", "peer", p.ep, "frames", len(frames))
		return true
	}
	id := binary.BigEndian.Uint64(frames[0])
	call, ok := c.pending[id]
	if !ok {
		return true // its caller gave up already
	}
	delete(c.pending, id)
	call.ch <- peerResult{body: frames[len(frames)-1]}
	return true
}

// fail marks c dead: every request pending on it gets err, the next Do
// dials a new socket, and c's reader closes the socket. Only the first
// call for a socket counts.
func (p *Peer) fail(c *peerConn, err error) {
	p.mu.Lock()
	if c.dead {
		p.mu.Unlock()
		return
	}
	c.dead = true
	for id, call := range c.pending {
		delete(c.pending, id)
		call.ch <- peerResult{err: err}
	}
	if p.conn == c {
		p.conn = nil
	}
	p.mu.Unlock()
	c.cancel() // the reader's Recv returns; it closes the socket
	if !errors.Is(err, ErrPeerClosed) {
		p.log.Warn("connection to peer dropped; the next request dials again", "peer", p.ep, "err", err)
	}
}

// timedOut ends a request whose reply did not come within Timeout, and
// drops the socket when nothing at all arrived on it since the request
// was sent.
func (p *Peer) timedOut(c *peerConn, id uint64, call *peerCall) ([]byte, error) {
	p.mu.Lock()
	if _, ok := c.pending[id]; !ok {
		p.mu.Unlock()
		r := <-call.ch // answered (or failed) just now
		return r.body, r.err
	}
	delete(c.pending, id)
	silent := c.received == call.seen
	p.mu.Unlock()
	if silent {
		p.fail(c, fmt.Errorf("%w: %w: %s sent nothing for %v", ErrNoReply, ErrPeerLost, p.ep, p.cfg.Timeout))
	}
	return nil, fmt.Errorf("%w from %s within %v", ErrNoReply, p.ep, p.cfg.Timeout)
}

// forget removes a request its caller gave up on. It returns the result
// if one had already been handed over.
func (p *Peer) forget(c *peerConn, id uint64, call *peerCall) (peerResult, bool) {
	p.mu.Lock()
	_, pending := c.pending[id]
	delete(c.pending, id)
	p.mu.Unlock()
	if pending {
		return peerResult{}, false
	}
	return <-call.ch, true
}

// Close closes the socket and waits for the reader (and any dial) to end;
// requests in flight return ErrPeerClosed, and so does every later Do.
func (p *Peer) Close() error {
	p.mu.Lock()
	if !p.closed {
		p.closed = true
		close(p.closing)
	}
	c := p.conn
	p.mu.Unlock()
	if c != nil {
		p.fail(c, ErrPeerClosed) // before cancel, so the requests see ErrPeerClosed
	}
	p.cancel() // aborts a dial under way
	p.wg.Wait()
	return nil
}
