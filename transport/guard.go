package transport

// The guarded TCP transport ("gtcp").
//
// zmq4 runs the ZMTP handshake inside its accept loop with no deadline, trusts
// every length it reads, writes each frame header and body with a separate
// syscall and blocks every subscriber behind the slowest one. The guard sits
// under zmq4 as its net.Conn / net.Listener, so zmq4 only ever sees a byte
// stream that has already been validated:
//
//   - listeners run the server side of the greeting + READY exchange in a
//     goroutine per connection and hand zmq4 only peers that completed it;
//   - every inbound stream (accepted and dialed) is parsed frame by frame:
//     greeting, READY metadata, frame and message sizes, commands;
//   - PING/PONG are handled by the guard (zmq4 does not), silence is detected;
//   - writes are buffered and flushed by a per-connection goroutine, so
//     Write never blocks zmq4 and a stuck peer is cut off alone;
//   - a request-reply peer's frames up to MaxFrame (16 MiB) reach the
//     application, which answers an oversized request itself; the memory
//     they take is budgeted (GuardConfig);
//   - listeners cap the connections of one source address and close peers
//     idle both ways for IdleTimeout.

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync/atomic"
	"time"

	"github.com/go-zeromq/zmq4"
	zmqtransport "github.com/go-zeromq/zmq4/transport"
)

// Scheme is the zmq4 transport name under which the guarded TCP transport is
// registered (in an init func). Endpoints look like "gtcp://host:port"; on the
// wire it is plain ZMTP 3 over TCP, so libzmq and plain zmq4 peers using
// "tcp://" talk to it unchanged.
const Scheme = "gtcp"

func init() {
	if err := zmq4.RegisterTransport(Scheme, guardTransport{}); err != nil {
		panic(fmt.Errorf("transport: registering %q: %w", Scheme, err))
	}
}

// GuardConfig holds every limit and timeout of the guarded transport. Every
// field has a default (DefaultGuardConfig) and is checked by Validate.
//
// Frames. A frame of up to LargeFrame bytes passes from any peer. A
// request-reply peer (its socket type is REQ, REP, DEALER or ROUTER: the
// peers that send requests, and their replies) may send frames of up to
// MaxFrame bytes, so that an oversized request reaches the application,
// which answers it with its own error ("request is N bytes, the limit is
// M") instead of the client hearing nothing. A larger frame, or one over
// LargeFrame from any other peer (publish/subscribe, pipeline, pair), cuts
// the connection off, and the cut is logged. The memory of large frames is
// bounded: one message carries at most one frame over LargeFrame (a second
// one cuts the connection), a connection has at most one large message in
// zmq4 at a time (its reader waits until zmq4 has handed the previous one
// on to the socket's queue, or, on a REQ socket, to the application's
// Recv), and the large frames being read on one listener (or on all dialed
// connections together) add up to at most LargeFrameBudget bytes: beyond,
// their readers wait (the peers are paused, not cut). What zmq4 and the
// application queue after reading is theirs to bound (zmq4 queues up to 10
// messages per socket).
//
// Connections. A listener accepts at most MaxConnsPerAddr connections from
// one source address at a time (handshaking or established): more are
// closed at once, logged once per address per minute and counted
// (AddrRefused). An accepted peer that has sent nothing and been sent
// nothing for IdleTimeout is closed (IdleTimeouts). The guard PINGs a peer
// that speaks ZMTP 3.1 (libzmq, pyzmq) or is another guard after
// HeartbeatIvl of silence, and its PONG counts as traffic, so such peers
// (every socket of our own roles, a subscriber on a quiet channel
// included) are never idle: IdleTimeout closes the peers that cannot be
// PINGed (ZMTP 3.0, e.g. plain zmq4 over tcp://) and that neither send
// nor receive anything. Dialed connections have no idle timeout.
type GuardConfig struct {
	HandshakeTimeout time.Duration // peer must send a valid greeting + READY within this (default 5s)
	MaxFrame         int64         // largest frame from a request-reply peer; larger: connection cut and logged (default 16 MiB)
	LargeFrame       int64         // largest frame from other peers; frames over it are "large" (default 1 MiB)
	LargeFrameBudget int64         // bytes of large frames read at once per listener, and over all dialed connections (default 64 MiB, >= MaxFrame)
	MaxMetadata      int           // largest READY command (and any other command frame) accepted (default 4 KiB)
	WriteTimeout     time.Duration // a pending write not drained in this time cuts the peer off (default 5s)
	// MaxPending is how many bytes may be queued for one peer before it is
	// cut off as a slow consumer (default 8 MiB). The bodies of outgoing
	// frames over LargeFrame do not count against it (a large reply or a
	// forwarded large request goes out even though it is larger); the
	// whole queue is still bounded by MaxPending + the largest message.
	MaxPending       int
	HeartbeatIvl     time.Duration // send a ZMTP PING after this much inbound silence (default 1s)
	HeartbeatTimeout time.Duration // close the connection after this much inbound silence (default 5s)
	// MaxMessage bounds a whole multipart message (sum of its frames, each
	// frame counting 64 bytes more for zmq4's bookkeeping). Zero means
	// MaxFrame + 4 × LargeFrame. A peer that is not request-reply gets at
	// most 4 × LargeFrame (or MaxMessage if smaller).
	MaxMessage int64
	// MaxConnsPerAddr is how many connections one source IP address may
	// hold on one listener at a time (default 256).
	MaxConnsPerAddr int
	// IdleTimeout closes an accepted connection that has had no traffic
	// in either direction for this long (default 5 min; must be longer
	// than HeartbeatTimeout).
	IdleTimeout time.Duration
}

// DefaultGuardConfig returns the production limits.
func DefaultGuardConfig() GuardConfig {
	return GuardConfig{
		HandshakeTimeout: 5 * time.Second,
		MaxFrame:         16 << 20,
		LargeFrame:       1 << 20,
		LargeFrameBudget: 64 << 20,
		MaxMetadata:      4 << 10,
		WriteTimeout:     5 * time.Second,
		MaxPending:       8 << 20,
		HeartbeatIvl:     time.Second,
		HeartbeatTimeout: 5 * time.Second,
		MaxConnsPerAddr:  256,
		IdleTimeout:      5 * time.Minute,
	}
}

// Validate reports a config that cannot work.
func (c GuardConfig) Validate() error {
	switch {
	case c.HandshakeTimeout <= 0:
		return errors.New("transport: HandshakeTimeout must be > 0")
	case c.MaxFrame <= 0:
		return errors.New("transport: MaxFrame must be > 0")
	case c.MaxFrame > 1<<40:
		return errors.New("transport: MaxFrame must be <= 1 TiB")
	case c.LargeFrame <= 0 || c.LargeFrame > c.MaxFrame:
		return errors.New("transport: LargeFrame must be > 0 and <= MaxFrame")
	case c.LargeFrameBudget < c.MaxFrame:
		return errors.New("transport: LargeFrameBudget must be >= MaxFrame")
	case c.MaxMetadata < 64:
		return errors.New("transport: MaxMetadata must be >= 64")
	case c.WriteTimeout <= 0:
		return errors.New("transport: WriteTimeout must be > 0")
	case c.MaxPending <= 0:
		return errors.New("transport: MaxPending must be > 0")
	case c.HeartbeatIvl <= 0:
		return errors.New("transport: HeartbeatIvl must be > 0")
	case c.HeartbeatTimeout <= c.HeartbeatIvl:
		return errors.New("transport: HeartbeatTimeout must be > HeartbeatIvl")
	case c.MaxMessage < 0:
		return errors.New("transport: MaxMessage must be >= 0")
	case c.MaxMessage != 0 && c.MaxMessage < c.MaxFrame:
		return errors.New("transport: MaxMessage must be 0 or >= MaxFrame")
	case c.MaxConnsPerAddr <= 0:
		return errors.New("transport: MaxConnsPerAddr must be > 0")
	case c.IdleTimeout <= c.HeartbeatTimeout:
		return errors.New("transport: IdleTimeout must be > HeartbeatTimeout")
	}
	return nil
}

// maxMessage bounds a message from a request-reply peer.
func (c GuardConfig) maxMessage() int64 {
	if c.MaxMessage > 0 {
		return c.MaxMessage
	}
	return c.MaxFrame + 4*c.LargeFrame
}

// maxOtherMessage bounds a message from any other peer.
func (c GuardConfig) maxOtherMessage() int64 {
	return min(c.maxMessage(), 4*c.LargeFrame)
}

// maxCommand is the largest command frame (READY included) read into memory.
func (c GuardConfig) maxCommand() int64 {
	n := int64(c.MaxMetadata)
	if n > c.LargeFrame {
		n = c.LargeFrame
	}
	return n
}

var guardCfg atomic.Pointer[GuardConfig]

func init() {
	c := DefaultGuardConfig()
	guardCfg.Store(&c)
}

// SetGuardConfig replaces the config used for connections opened from now on
// (tests shorten timeouts).
func SetGuardConfig(c GuardConfig) error {
	if err := c.Validate(); err != nil {
		return err
	}
	guardCfg.Store(&c)
	return nil
}

// CurrentGuardConfig returns the config new connections get.
func CurrentGuardConfig() GuardConfig { return *guardCfg.Load() }

// GuardStats counts what the guard refused or cut off (for logs and tests).
// Stats returns a snapshot; the counters themselves are atomic and only grow.
type GuardStats struct {
	Accepted  uint64 // raw TCP connections accepted by gtcp listeners
	Dialed    uint64 // connections dialed through gtcp
	Handshook uint64 // connections whose peer sent a valid greeting + READY

	BadGreeting       uint64 // not ZMTP >= 3, mechanism not NULL, garbage (e.g. HTTP)
	BadReady          uint64 // malformed, truncated or oversized READY; missing/unknown Socket-Type
	HandshakeTimeouts uint64 // peer silent or too slow during the handshake
	Incompatible      uint64 // socket types that cannot talk to each other (e.g. SUB to ROUTER)
	Oversized         uint64 // frame > MaxFrame (> LargeFrame from a peer that is not request-reply), message > MaxMessage, two large frames in a message
	BadCommands       uint64 // unknown or misplaced command, reserved flag bits, bad local stream
	SlowConsumers     uint64 // cut off: > MaxPending queued, or a flush not drained in WriteTimeout
	HeartbeatTimeouts uint64 // closed after HeartbeatTimeout of inbound silence
	AddrRefused       uint64 // connections refused: MaxConnsPerAddr reached for their source address
	IdleTimeouts      uint64 // closed after IdleTimeout with no traffic either way

	LargeFrames          uint64 // frames over LargeFrame let through (from request-reply peers)
	LargeFrameWaits      uint64 // times a reader waited for LargeFrameBudget
	SubscriptionsIgnored uint64 // Fanout: subscriptions over FanoutConfig.MaxTopics or MaxTopicLen, ignored

	IdentitiesRewritten uint64 // duplicate or reserved (0x00...) identities replaced (empty ones are filled in silently)
	PingsSent           uint64 // PINGs the guard sent
	PongsReceived       uint64 // PONGs received (the peer answers PING)
	PingsAnswered       uint64 // peer PINGs answered with a PONG by the guard
	Subscriptions       uint64 // ZMTP 3.1 SUBSCRIBE/CANCEL commands turned into zmq4 messages
}

// Refused is the number of connections closed for a protocol or resource
// violation (everything but heartbeat and idle timeouts).
func (s GuardStats) Refused() uint64 {
	return s.BadGreeting + s.BadReady + s.HandshakeTimeouts + s.Incompatible +
		s.Oversized + s.BadCommands + s.SlowConsumers + s.AddrRefused
}

type guardCounters struct {
	accepted, dialed, handshook                                           atomic.Uint64
	badGreeting, badReady, hsTimeouts, incompatible, oversized, badCmds   atomic.Uint64
	slow, hbTimeouts, idRewritten, pingsSent, pongsRecv, pingsAns, subCmd atomic.Uint64
	addrRefused, idleTimeouts, largeFrames, largeWaits, subsIgnored       atomic.Uint64
}

var gstats guardCounters

// Stats returns a snapshot of the guard's counters.
func Stats() GuardStats {
	s := &gstats
	return GuardStats{
		Accepted:             s.accepted.Load(),
		Dialed:               s.dialed.Load(),
		Handshook:            s.handshook.Load(),
		BadGreeting:          s.badGreeting.Load(),
		BadReady:             s.badReady.Load(),
		HandshakeTimeouts:    s.hsTimeouts.Load(),
		Incompatible:         s.incompatible.Load(),
		Oversized:            s.oversized.Load(),
		BadCommands:          s.badCmds.Load(),
		SlowConsumers:        s.slow.Load(),
		HeartbeatTimeouts:    s.hbTimeouts.Load(),
		IdentitiesRewritten:  s.idRewritten.Load(),
		PingsSent:            s.pingsSent.Load(),
		PongsReceived:        s.pongsRecv.Load(),
		PingsAnswered:        s.pingsAns.Load(),
		Subscriptions:        s.subCmd.Load(),
		AddrRefused:          s.addrRefused.Load(),
		IdleTimeouts:         s.idleTimeouts.Load(),
		LargeFrames:          s.largeFrames.Load(),
		LargeFrameWaits:      s.largeWaits.Load(),
		SubscriptionsIgnored: s.subsIgnored.Load(),
	}
}

// guardTransport implements zmq4's transport.Transport.
type guardTransport struct{}

var _ zmqtransport.Transport = guardTransport{}

var plainTCP = zmqtransport.New("tcp")

// Dial connects to addr and wraps the connection in the guard.
func (guardTransport) Dial(ctx context.Context, dialer zmqtransport.Dialer, addr string) (net.Conn, error) {
	raw, err := dialer.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	cfg := CurrentGuardConfig()
	setKeepAlive(raw, cfg)
	gstats.dialed.Add(1)
	c := newGuardConn(raw, cfg, nil)
	c.start()
	return c, nil
}

// Listen announces on addr; Accept returns only peers that completed the
// handshake.
func (guardTransport) Listen(ctx context.Context, addr string) (net.Listener, error) {
	inner, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	return newGuardListener(inner), nil
}

// Addr normalises an endpoint address like zmq4's "tcp" transport does.
func (guardTransport) Addr(ep string) (string, error) { return plainTCP.Addr(ep) }

// setKeepAlive makes the kernel notice a peer that vanished without FIN even
// when the peer cannot be PINGed (plain zmq4 peers).
func setKeepAlive(c net.Conn, cfg GuardConfig) {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return
	}
	ivl := cfg.HeartbeatIvl
	if ivl < time.Second {
		ivl = time.Second
	}
	n := int(cfg.HeartbeatTimeout / ivl)
	if n < 1 {
		n = 1
	}
	_ = tc.SetKeepAliveConfig(net.KeepAliveConfig{Enable: true, Idle: ivl, Interval: ivl, Count: n})
}
