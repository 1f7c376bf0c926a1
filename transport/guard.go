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
//     Write never blocks zmq4 and a stuck peer is cut off alone.

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

// GuardConfig holds every limit and timeout of the guarded transport.
type GuardConfig struct {
	HandshakeTimeout time.Duration // peer must send a valid greeting + READY within this (default 5s)
	MaxFrame         int64         // largest frame accepted; larger: connection closed (default 1 MiB)
	MaxMetadata      int           // largest READY command (and any other command frame) accepted (default 4 KiB)
	WriteTimeout     time.Duration // a pending write not drained in this time cuts the peer off (default 5s)
	MaxPending       int           // bytes queued for one peer before it is cut off as a slow consumer (default 8 MiB; also bounds one outgoing message)
	HeartbeatIvl     time.Duration // send a ZMTP PING after this much inbound silence (default 1s)
	HeartbeatTimeout time.Duration // close the connection after this much inbound silence (default 5s)
	// MaxMessage bounds a whole multipart message (sum of its frames, each
	// frame counting 64 bytes more for zmq4's bookkeeping). Zero means
	// 4 × MaxFrame.
	MaxMessage int64
}

// DefaultGuardConfig returns the production limits.
func DefaultGuardConfig() GuardConfig {
	return GuardConfig{
		HandshakeTimeout: 5 * time.Second,
		MaxFrame:         1 << 20,
		MaxMetadata:      4 << 10,
		WriteTimeout:     5 * time.Second,
		MaxPending:       8 << 20,
		HeartbeatIvl:     time.Second,
		HeartbeatTimeout: 5 * time.Second,
	}
}

// Validate reports a config that cannot work.
func (c GuardConfig) Validate() error {
	switch {
	case c.HandshakeTimeout <= 0:
		return errors.New("transport: HandshakeTimeout must be > 0")
	case c.MaxFrame <= 0:
		return errors.New("transport: MaxFrame must be > 0")
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
	}
	return nil
}

func (c GuardConfig) maxMessage() int64 {
	if c.MaxMessage > 0 {
		return c.MaxMessage
	}
	if c.MaxFrame > (1<<62)/4 {
		return 1 << 62
	}
	return 4 * c.MaxFrame
}

// maxCommand is the largest command frame (READY included) read into memory.
func (c GuardConfig) maxCommand() int64 {
	n := int64(c.MaxMetadata)
	if n > c.MaxFrame {
		n = c.MaxFrame
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
	Oversized         uint64 // frame > MaxFrame or message > MaxMessage
	BadCommands       uint64 // unknown or misplaced command, reserved flag bits, bad local stream
	SlowConsumers     uint64 // cut off: > MaxPending queued, or a flush not drained in WriteTimeout
	HeartbeatTimeouts uint64 // closed after HeartbeatTimeout of inbound silence

	IdentitiesRewritten uint64 // duplicate or reserved (0x00...) identities replaced (empty ones are filled in silently)
	PingsSent           uint64 // PINGs the guard sent
	PongsReceived       uint64 // PONGs received (the peer answers PING)
	PingsAnswered       uint64 // peer PINGs answered with a PONG by the guard
	Subscriptions       uint64 // ZMTP 3.1 SUBSCRIBE/CANCEL commands turned into zmq4 messages
}

// Refused is the number of connections closed for a protocol or resource
// violation (everything but heartbeat timeouts).
func (s GuardStats) Refused() uint64 {
	return s.BadGreeting + s.BadReady + s.HandshakeTimeouts + s.Incompatible +
		s.Oversized + s.BadCommands + s.SlowConsumers
}

type guardCounters struct {
	accepted, dialed, handshook                                           atomic.Uint64
	badGreeting, badReady, hsTimeouts, incompatible, oversized, badCmds   atomic.Uint64
	slow, hbTimeouts, idRewritten, pingsSent, pongsRecv, pingsAns, subCmd atomic.Uint64
}

var gstats guardCounters

// Stats returns a snapshot of the guard's counters.
func Stats() GuardStats {
	s := &gstats
	return GuardStats{
		Accepted:            s.accepted.Load(),
		Dialed:              s.dialed.Load(),
		Handshook:           s.handshook.Load(),
		BadGreeting:         s.badGreeting.Load(),
		BadReady:            s.badReady.Load(),
		HandshakeTimeouts:   s.hsTimeouts.Load(),
		Incompatible:        s.incompatible.Load(),
		Oversized:           s.oversized.Load(),
		BadCommands:         s.badCmds.Load(),
		SlowConsumers:       s.slow.Load(),
		HeartbeatTimeouts:   s.hbTimeouts.Load(),
		IdentitiesRewritten: s.idRewritten.Load(),
		PingsSent:           s.pingsSent.Load(),
		PongsReceived:       s.pongsRecv.Load(),
		PingsAnswered:       s.pingsAns.Load(),
		Subscriptions:       s.subCmd.Load(),
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
