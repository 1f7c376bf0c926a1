package transport

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-zeromq/zmq4"
)

const (
	guardReadBuf    = 16 << 10 // bufio.Reader size
	guardStageMax   = 16 << 10 // inbound bytes batched before handing them to zmq4
	guardInboundMax = 1 << 20  // inbound bytes queued for zmq4 before the reader pauses
	guardFreeChunks = 2        // stage chunks kept for reuse per connection
	guardWChunk     = 16 << 10 // outbound buffer chunk
	guardWFree      = 4        // outbound chunks kept for reuse per connection
	guardLocalReady = 64 << 10 // largest READY zmq4 may write
)

// outbound stream phases (what zmq4 writes)
const (
	oGreeting = iota
	oReady
	oFrames
)

var guardEpoch = time.Now()

func monoNow() int64 { return int64(time.Since(guardEpoch)) + 1 }

// guardConn is the net.Conn zmq4 reads from and writes to.
type guardConn struct {
	raw     net.Conn
	cfg     GuardConfig
	l       *guardListener // nil for dialed conns
	created time.Time

	wg         sync.WaitGroup // reader and flusher goroutines
	readerDone chan struct{}

	// inbound: reader goroutine -> zmq4
	br     *bufio.Reader
	parser *zParser
	stage  []byte
	inq    guardInQueue
	hsDone bool // reader goroutine only

	emitted int64                     // bytes handed to the stage so far (reader goroutine only)
	hold    atomic.Pointer[largeHold] // the share of the frame budget of the large message in zmq4, if any
	deadCh  chan struct{}             // closed by abort
	lastOut atomic.Int64              // monoNow() of zmq4's last write (idle timeout)

	waitSince atomic.Int64 // monoNow() while the reader waits on the network, else 0

	// outbound: zmq4 -> flusher goroutine, all under wmu
	wmu           sync.Mutex
	wcond         sync.Cond
	pending       [][]byte // chunks of guardWChunk bytes, flushed with writev
	pendingLen    int
	inflight      int
	wfree         [][]byte // spare chunks
	flushList     [][]byte // flusher only
	cmdScratch    []byte
	flushing      bool
	closing       bool
	closeDeadline time.Time
	noMoreFlush   bool      // set by Close before it waits for the goroutines
	outTotal      int64     // bytes ever appended to pending
	flushedTotal  int64     // bytes ever written to the network
	exempt        []outSpan // bodies of outgoing frames over LargeFrame not yet written

	oPhase    int
	oSwallow  bool // server: our greeting was already sent, drop zmq4's (after checking it)
	oGreetN   int
	oReadyBuf []byte
	oHdr      [9]byte
	oHdrN     int
	oHdrNeed  int
	oBodyLeft int64
	oMore     bool

	outReady  bool   // zmq4's READY has been sent
	inReady   bool   // the peer's READY has been received
	localType string // from zmq4's READY
	peerType  string // from the peer's READY
	injPing   bool
	injPong   bool
	pongCtx   []byte

	// heartbeat
	pingable  bool // set once, before the timer starts
	hbmu      sync.Mutex
	hbTimer   *time.Timer
	hbStopped bool
	pingedFor int64

	// teardown
	dead      atomic.Bool
	abortOnce sync.Once
	abortErr  error
	closeOnce sync.Once
	regID     string // identity registered with the listener
	srcAddr   string // source address counted by the listener (MaxConnsPerAddr)
}

func newGuardConn(raw net.Conn, cfg GuardConfig, l *guardListener) *guardConn {
	c := &guardConn{raw: raw, cfg: cfg, l: l, created: time.Now(), readerDone: make(chan struct{}), deadCh: make(chan struct{})}
	c.wcond.L = &c.wmu
	c.inq.init(guardInboundMax)
	c.br = bufio.NewReaderSize(guardRawReader{c}, guardReadBuf)
	c.parser = newZParser(c.br, cfg, c)
	c.stage = c.inq.getChunk()
	return c
}

// start sends our greeting (server side) and starts the reader goroutine.
func (c *guardConn) start() {
	if c.l != nil {
		// Greet at once: libzmq peers send their greeting in parts and wait
		// for ours. zmq4 writes the same 64 bytes later; they are dropped.
		c.wmu.Lock()
		c.oSwallow = true
		c.outLocked(zmq4Greeting[:])
		c.kickLocked()
		c.wmu.Unlock()
	}
	c.wg.Add(1)
	go c.readLoop()
}

type guardRawReader struct{ c *guardConn }

func (r guardRawReader) Read(p []byte) (int, error) {
	r.c.waitSince.Store(monoNow())
	n, err := r.c.raw.Read(p)
	r.c.waitSince.Store(0)
	return n, err
}

// ---- inbound ----

func (c *guardConn) readLoop() {
	defer c.wg.Done()
	defer close(c.readerDone)
	_ = c.raw.SetReadDeadline(c.created.Add(c.cfg.HandshakeTimeout))
	for {
		err := c.parser.step()
		if err == nil && !c.hsDone && c.parser.phase == pFrames {
			c.hsDone = true
			gstats.handshook.Add(1)
			_ = c.raw.SetReadDeadline(time.Time{})
			err = c.flush()
			if err == nil && c.l != nil && !c.l.handoff(c) {
				err = errGuardClosed
			}
			if err == nil {
				c.startHeartbeat()
			}
		}
		if err != nil {
			// zmq4 gets every valid byte before the error (never blocks:
			// zmq4 may have stopped reading)
			if len(c.stage) > 0 {
				c.stage, _ = c.inq.push(c.stage, true)
			}
			c.abort(c.classify(err))
			c.inq.putChunk(c.stage)
			c.stage = nil
			return
		}
	}
}

func (c *guardConn) classify(err error) error {
	var v *guardViolation
	if errors.As(err, &v) {
		return v
	}
	if c.dead.Load() {
		return err
	}
	var ne net.Error
	if !c.hsDone && errors.As(err, &ne) && ne.Timeout() {
		return violation(&gstats.hsTimeouts, "no valid greeting + READY within %v", c.cfg.HandshakeTimeout)
	}
	return io.EOF
}

// emit implements zSink.
func (c *guardConn) emit(b []byte) error {
	c.emitted += int64(len(b))
	for len(b) > 0 {
		room := cap(c.stage) - len(c.stage)
		if room == 0 {
			if err := c.flush(); err != nil {
				return err
			}
			continue
		}
		n := min(room, len(b))
		c.stage = append(c.stage, b[:n]...)
		b = b[n:]
	}
	return nil
}

// flush implements zSink: hand staged bytes to zmq4.
func (c *guardConn) flush() error {
	if len(c.stage) == 0 {
		return nil
	}
	next, err := c.inq.push(c.stage, false)
	if err != nil {
		return err
	}
	c.stage = next
	return nil
}

// ready implements zSink: the peer's READY is valid.
func (c *guardConn) ready(props []zProp, major, minor byte) ([]byte, error) {
	st, _ := findProp(props, zPropSocketType)
	_, marker := findProp(props, zPropMarker)
	c.pingable = marker || major > 3 || major == 3 && minor >= 1

	out := make([]zProp, 0, len(props)+1)
	for _, p := range props {
		if !strings.EqualFold(p.name, zPropMarker) && !(c.l != nil && strings.EqualFold(p.name, zPropIdentity)) {
			out = append(out, p)
		}
	}
	if c.l != nil {
		id, _ := findProp(props, zPropIdentity)
		out = append(out, zProp{name: zPropIdentity, value: c.l.register(c, id)})
	}

	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.peerType = string(st)
	c.inReady = true
	if err := c.checkCompatLocked(); err != nil {
		return nil, err
	}
	c.injectLocked()
	return encodeReady(out), nil
}

func (c *guardConn) checkCompatLocked() error {
	if c.localType == "" || c.peerType == "" {
		return nil
	}
	if !zmq4.SocketType(c.localType).IsCompatible(zmq4.SocketType(c.peerType)) {
		return violation(&gstats.incompatible, "%s cannot talk to %s", c.peerType, c.localType)
	}
	return nil
}

// command implements zSink.
func (c *guardConn) command(name string, data []byte) error {
	switch name {
	case "PING":
		// ZMTP 3.1: TTL (2 bytes) + context (up to 16 bytes) to echo.
		var ctx []byte
		if len(data) > 2 {
			ctx = data[2:]
			if len(ctx) > 16 {
				ctx = ctx[:16]
			}
		}
		c.wmu.Lock()
		c.injPong = true
		c.pongCtx = append(c.pongCtx[:0], ctx...)
		c.injectLocked()
		c.wmu.Unlock()
	case "PONG":
		gstats.pongsRecv.Add(1)
	}
	return nil
}

// large implements zSink: a frame of size bytes (over LargeFrame) comes
// next. Its header is handed to zmq4 (which then allocates size bytes)
// only once the previous large message of this connection has left zmq4
// and the frame has its share of the budget; meanwhile this connection is
// not read (its peer is paused, not cut off).
func (c *guardConn) large(size int64) error {
	if err := c.flush(); err != nil { // zmq4 must be able to finish the previous one
		return err
	}
	if h := c.hold.Load(); h != nil {
		select {
		case <-h.done:
		case <-c.deadCh:
			return c.err()
		}
	}
	b := &dialBudget
	if c.l != nil {
		b = &c.l.budget
	}
	if !b.acquire(size, c.cfg.LargeFrameBudget, c.deadCh) {
		return c.err()
	}
	h := &largeHold{b: b, n: size, done: make(chan struct{})}
	c.hold.Store(h)
	if c.dead.Load() { // abort may have looked before the Store
		h.release()
		return c.err()
	}
	gstats.largeFrames.Add(1)
	return nil
}

// largeDone implements zSink: the large message ends with the bytes
// emitted so far; its share is released when zmq4 reads past them. zmq4
// reads every socket but REQ from a goroutine per connection that queues
// each message for the application before it reads the next: its share
// is kept until then. A REQ socket reads in the application's Recv: the
// message is the application's once read.
func (c *guardConn) largeDone() error {
	if h := c.hold.Load(); h != nil {
		c.wmu.Lock()
		inRecv := c.localType == "REQ"
		c.wmu.Unlock()
		c.inq.setMark(c.emitted, inRecv, h.release)
	}
	return nil
}

// Read hands zmq4 the validated inbound stream.
func (c *guardConn) Read(p []byte) (int, error) { return c.inq.read(p) }

// ---- outbound ----

// Write queues p for the flusher; it never blocks on the network. A peer
// whose queue exceeds MaxPending is cut off and Write returns an error (zmq4
// then drops the peer).
func (c *guardConn) Write(p []byte) (int, error) {
	if c.dead.Load() {
		return 0, c.err()
	}
	c.lastOut.Store(monoNow())
	c.wmu.Lock()
	err := c.trackLocked(p)
	if err == nil && c.outReady && c.overPendingLocked() {
		c.wmu.Unlock()
		v := violation(&gstats.slow, "slow consumer: more than %d bytes pending", c.cfg.MaxPending)
		c.abort(v)
		return 0, c.err()
	}
	if err == nil {
		c.kickLocked()
	}
	c.wmu.Unlock()
	if err != nil {
		c.abort(err)
		return 0, c.err()
	}
	return len(p), nil
}

// outSpan is the stream offsets [start, end) of one outgoing frame body.
type outSpan struct{ start, end int64 }

// overPendingLocked: more is queued for the peer than MaxPending allows.
// The bodies of frames over LargeFrame do not count (one large message
// must go out whole, even to a peer with other messages queued), but the
// whole queue may not exceed MaxPending plus the largest message.
func (c *guardConn) overPendingLocked() bool {
	queued := int64(c.pendingLen + c.inflight)
	if queued > int64(c.cfg.MaxPending)+c.cfg.maxMessage() {
		return true
	}
	if queued <= int64(c.cfg.MaxPending) {
		return false
	}
	var exempt int64
	for _, sp := range c.exempt {
		exempt += min(sp.end, c.outTotal) - max(sp.start, c.flushedTotal)
	}
	return queued-exempt > int64(c.cfg.MaxPending)
}

// trackLocked appends p to pending while following zmq4's frame structure,
// so PING/PONG can be slipped in between messages.
func (c *guardConn) trackLocked(p []byte) error {
	for len(p) > 0 {
		switch c.oPhase {
		case oGreeting:
			k := min(len(p), zGreetingLen-c.oGreetN)
			if c.oSwallow {
				if !bytes.Equal(p[:k], zmq4Greeting[c.oGreetN:c.oGreetN+k]) {
					return violation(&gstats.badCmds, "local greeting differs from the one sent (gtcp supports NULL security only)")
				}
			} else {
				c.outLocked(p[:k])
			}
			c.oGreetN += k
			p = p[k:]
			if c.oGreetN == zGreetingLen {
				c.oPhase = oReady
			}
		case oReady:
			var err error
			if p, err = c.localReadyLocked(p); err != nil {
				return err
			}
		default:
			if c.oBodyLeft > 0 {
				k := int64(len(p))
				if k > c.oBodyLeft {
					k = c.oBodyLeft
				}
				c.outLocked(p[:k])
				p = p[k:]
				c.oBodyLeft -= k
				if c.oBodyLeft == 0 {
					c.injectLocked()
				}
				continue
			}
			if c.oHdrN == 0 {
				if p[0]&^zFlagMask != 0 {
					return violation(&gstats.badCmds, "local stream out of sync")
				}
				c.oHdrNeed = 2
				if p[0]&zFlagLong != 0 {
					c.oHdrNeed = 9
				}
			}
			k := min(len(p), c.oHdrNeed-c.oHdrN)
			copy(c.oHdr[c.oHdrN:], p[:k])
			c.outLocked(p[:k])
			c.oHdrN += k
			p = p[k:]
			if c.oHdrN < c.oHdrNeed {
				continue
			}
			c.oHdrN = 0
			flags := c.oHdr[0]
			size := int64(c.oHdr[1])
			if c.oHdrNeed == 9 {
				size = int64(binary.BigEndian.Uint64(c.oHdr[1:9]) & (1<<63 - 1))
			}
			if flags&zFlagCommand == 0 {
				c.oMore = flags&zFlagMore != 0
			}
			c.oBodyLeft = size
			if size > c.cfg.LargeFrame && flags&zFlagCommand == 0 {
				c.exempt = append(c.exempt, outSpan{c.outTotal, c.outTotal + size})
			}
			if size == 0 {
				c.injectLocked()
			}
		}
	}
	return nil
}

// localReadyLocked collects zmq4's READY, learns the local socket type and
// adds the marker that tells another guard we answer PING.
func (c *guardConn) localReadyLocked(p []byte) ([]byte, error) {
	for {
		b := c.oReadyBuf
		hl := 2
		if len(b) > 0 && b[0]&zFlagLong != 0 {
			hl = 9
		}
		want := hl
		if len(b) >= hl {
			var size uint64
			if hl == 2 {
				size = uint64(b[1])
			} else {
				size = binary.BigEndian.Uint64(b[1:9])
			}
			if size > guardLocalReady {
				return nil, violation(&gstats.badCmds, "local READY too large")
			}
			want = hl + int(size)
			if len(b) == want {
				return p, c.sendLocalReadyLocked(b[0], b[hl:])
			}
		}
		if len(p) == 0 {
			return p, nil
		}
		k := min(len(p), want-len(b))
		c.oReadyBuf = append(b, p[:k]...)
		p = p[k:]
	}
}

func (c *guardConn) sendLocalReadyLocked(flags byte, body []byte) error {
	if flags&(zFlagCommand|zFlagMore) != zFlagCommand {
		return violation(&gstats.badCmds, "local stream: READY expected (gtcp supports NULL security only)")
	}
	props, err := parseReady(body)
	if err != nil {
		return violation(&gstats.badCmds, "local READY: %v", err)
	}
	st, _ := findProp(props, zPropSocketType)
	c.localType = string(st)
	nb := make([]byte, 0, len(body)+32)
	nb = append(nb, body...)
	nb = appendProp(nb, zPropMarker, []byte("1"))
	c.outLocked(appendFrameHeader(nil, zFlagCommand, int64(len(nb))))
	c.outLocked(nb)
	c.oReadyBuf = nil
	c.oPhase = oFrames
	c.outReady = true
	if err := c.checkCompatLocked(); err != nil {
		return err
	}
	c.injectLocked()
	return nil
}

// injectLocked appends pending PONG/PING if the outbound stream is between
// two messages and both READYs have been exchanged.
func (c *guardConn) injectLocked() {
	if !c.injPing && !c.injPong {
		return
	}
	if !c.outReady || !c.inReady || c.oBodyLeft != 0 || c.oHdrN != 0 || c.oMore {
		return
	}
	if c.injPong {
		c.cmdScratch = appendCommand(c.cmdScratch[:0], "PONG", c.pongCtx)
		c.outLocked(c.cmdScratch)
		c.injPong = false
		gstats.pingsAns.Add(1)
	}
	if c.injPing {
		// TTL 0: the peer must not time us out on our PING's account.
		c.cmdScratch = appendCommand(c.cmdScratch[:0], "PING", []byte{0, 0})
		c.outLocked(c.cmdScratch)
		c.injPing = false
		gstats.pingsSent.Add(1)
	}
	if c.overPendingLocked() {
		// e.g. a PING flood from a peer that does not read our PONGs
		c.abort(violation(&gstats.slow, "slow consumer: more than %d bytes pending", c.cfg.MaxPending))
		return
	}
	c.kickLocked()
}

func (c *guardConn) kickLocked() {
	if c.flushing || c.noMoreFlush || c.pendingLen == 0 || c.dead.Load() {
		return
	}
	c.flushing = true
	c.wg.Add(1)
	go c.flushLoop()
}

func (c *guardConn) flushLoop() {
	defer c.wg.Done()
	c.wmu.Lock()
	for c.pendingLen > 0 && !c.dead.Load() {
		bufs := net.Buffers(c.pending)
		c.flushList = append(c.flushList[:0], bufs...)
		c.pending = nil
		c.inflight = c.pendingLen
		c.pendingLen = 0
		dl := time.Now().Add(c.cfg.WriteTimeout)
		if c.closing && c.closeDeadline.Before(dl) {
			dl = c.closeDeadline
		}
		closing := c.closing
		c.wmu.Unlock()

		_ = c.raw.SetWriteDeadline(dl)
		_, err := bufs.WriteTo(c.raw) // one writev for many small frames

		c.wmu.Lock()
		if err == nil {
			c.flushedTotal += int64(c.inflight)
			// forget the large frame bodies written out
			i := 0
			for i < len(c.exempt) && c.exempt[i].end <= c.flushedTotal {
				i++
			}
			if i > 0 {
				c.exempt = append(c.exempt[:0], c.exempt[i:]...)
			}
		}
		c.inflight = 0
		for i, ch := range c.flushList {
			if cap(ch) == guardWChunk && len(c.wfree) < guardWFree {
				c.wfree = append(c.wfree, ch[:0])
			}
			c.flushList[i] = nil
		}
		if err != nil {
			var ne net.Error
			switch {
			case c.dead.Load() || closing:
				c.abort(io.EOF)
			case errors.As(err, &ne) && ne.Timeout():
				c.abort(violation(&gstats.slow, "slow consumer: write not drained in %v", c.cfg.WriteTimeout))
			default:
				c.abort(io.EOF)
			}
			break
		}
	}
	c.flushing = false
	c.wcond.Broadcast()
	c.wmu.Unlock()
}

// outLocked appends b to the pending chunks.
func (c *guardConn) outLocked(b []byte) {
	c.pendingLen += len(b)
	c.outTotal += int64(len(b))
	for len(b) > 0 {
		n := len(c.pending)
		if n == 0 || len(c.pending[n-1]) == cap(c.pending[n-1]) {
			var ch []byte
			if k := len(c.wfree); k > 0 {
				ch = c.wfree[k-1]
				c.wfree[k-1] = nil
				c.wfree = c.wfree[:k-1]
			} else {
				ch = make([]byte, 0, guardWChunk)
			}
			c.pending = append(c.pending, ch)
			n++
		}
		tail := c.pending[n-1]
		k := min(cap(tail)-len(tail), len(b))
		c.pending[n-1] = append(tail, b[:k]...)
		b = b[k:]
	}
}

// ---- heartbeat ----

func (c *guardConn) startHeartbeat() {
	// Plain zmq4 (ZMTP 3.0, no marker) would hand a PING to the
	// application: it is never PINGed; TCP keepalive covers vanished
	// hosts, and the idle timeout (accepted connections) silent ones.
	if !c.pingable && c.l == nil {
		return
	}
	c.lastOut.Store(monoNow())
	first := c.cfg.HeartbeatIvl
	if !c.pingable {
		first = c.cfg.IdleTimeout
	}
	c.hbmu.Lock()
	if !c.hbStopped {
		c.hbTimer = time.AfterFunc(first, c.heartbeat)
	}
	c.hbmu.Unlock()
}

// heartbeat measures inbound silence only while the reader is actually
// waiting for the network: a reader paused because zmq4 is not consuming is
// our slowness, not the peer's. On an accepted connection it also closes a
// peer idle both ways for IdleTimeout (a PINGed peer's PONG is traffic).
func (c *guardConn) heartbeat() {
	if c.dead.Load() {
		return
	}
	cfg := c.cfg
	now := monoNow()
	ws := c.waitSince.Load()
	var next time.Duration
	if c.l != nil {
		idle := time.Duration(0)
		if ws != 0 {
			idle = min(time.Duration(now-ws), time.Duration(now-c.lastOut.Load()))
		}
		if idle >= cfg.IdleTimeout {
			c.abort(violation(&gstats.idleTimeouts, "idle for %v: nothing received or sent (IdleTimeout)", idle.Round(time.Millisecond)))
			return
		}
		next = cfg.IdleTimeout - idle
	}
	if c.pingable {
		next = cfg.HeartbeatIvl
		if ws != 0 {
			silent := time.Duration(now - ws)
			switch {
			case silent >= cfg.HeartbeatTimeout:
				c.abort(violation(&gstats.hbTimeouts, "no traffic from peer for %v", silent.Round(time.Millisecond)))
				return
			case silent >= cfg.HeartbeatIvl:
				c.hbmu.Lock()
				ping := c.pingedFor != ws
				c.pingedFor = ws
				c.hbmu.Unlock()
				if ping {
					c.wmu.Lock()
					c.injPing = true
					c.injectLocked()
					c.wmu.Unlock()
				}
				next = cfg.HeartbeatTimeout - silent
			default:
				next = cfg.HeartbeatIvl - silent
			}
		}
	}
	c.hbmu.Lock()
	if !c.hbStopped {
		c.hbTimer.Reset(next)
	}
	c.hbmu.Unlock()
}

// ---- teardown ----

func (c *guardConn) err() error {
	if c.abortErr != nil {
		return c.abortErr
	}
	return errGuardClosed
}

// abort kills the connection at once (never blocks, never takes wmu): zmq4
// sees errors from Read/Write and drops the peer.
func (c *guardConn) abort(err error) {
	c.abortOnce.Do(func() {
		c.abortErr = err
		c.dead.Store(true)
		if v, ok := err.(*guardViolation); ok && v.kind != nil {
			v.kind.Add(1)
			logViolation(c.raw.RemoteAddr().String(), v)
		}
		_ = c.raw.Close()
		close(c.deadCh)
		if h := c.hold.Load(); h != nil {
			h.release() // zmq4 drops the unfinished message (or has it already)
		}
		c.inq.fail(err)
		c.hbmu.Lock()
		c.hbStopped = true
		if c.hbTimer != nil {
			c.hbTimer.Stop()
		}
		c.hbmu.Unlock()
		if c.l != nil {
			c.l.release(c)
		}
	})
}

// Close flushes what is pending (bounded by WriteTimeout), closes the
// connection and waits for its goroutines.
func (c *guardConn) Close() error {
	c.closeOnce.Do(func() {
		c.wmu.Lock()
		c.closing = true
		c.closeDeadline = time.Now().Add(c.cfg.WriteTimeout)
		for c.flushing {
			c.wcond.Wait()
		}
		c.noMoreFlush = true
		c.wmu.Unlock()
		c.abort(errGuardClosed)
		c.wg.Wait()
	})
	return nil
}

func (c *guardConn) LocalAddr() net.Addr  { return c.raw.LocalAddr() }
func (c *guardConn) RemoteAddr() net.Addr { return c.raw.RemoteAddr() }

// Deadlines are not supported (zmq4 never sets them); the guard manages its own.
func (c *guardConn) SetDeadline(time.Time) error      { return nil }
func (c *guardConn) SetReadDeadline(time.Time) error  { return nil }
func (c *guardConn) SetWriteDeadline(time.Time) error { return nil }

var _ net.Conn = (*guardConn)(nil)

// ---- inbound queue ----

// guardInQueue carries validated bytes from the reader goroutine to zmq4.
type guardInQueue struct {
	mu       sync.Mutex
	notEmpty sync.Cond
	notFull  sync.Cond
	chunks   [][]byte
	off      int // read offset in chunks[0]
	size     int
	limit    int
	err      error // set by fail: returned once drained; push fails
	free     [][]byte
	readN    int64 // bytes read by zmq4 so far
	mark     int64 // onMark runs once readN >= mark: at the next read call, or at once if markNow
	markNow  bool
	onMark   func() // nil: no mark
}

// setMark arranges for fn to run when zmq4 next reads after consuming the
// first n bytes of the stream (zmq4 reads a connection from one goroutine
// that hands each whole message on before reading the next one, so by
// then the message ending at n has left zmq4's reader), or, with now, as
// soon as it has consumed them.
func (q *guardInQueue) setMark(n int64, now bool, fn func()) {
	q.mu.Lock()
	if q.readN >= n {
		// consumed already (and zmq4 may be waiting in read): release now
		q.mu.Unlock()
		fn()
		return
	}
	q.mark, q.markNow, q.onMark = n, now, fn
	q.mu.Unlock()
}

// takeMarkLocked returns the mark's function if it is due.
func (q *guardInQueue) takeMarkLocked(atCall bool) func() {
	if q.onMark == nil || q.readN < q.mark || !atCall && !q.markNow {
		return nil
	}
	fn := q.onMark
	q.onMark = nil
	return fn
}

func (q *guardInQueue) init(limit int) {
	q.limit = limit
	q.notEmpty.L = &q.mu
	q.notFull.L = &q.mu
}

func (q *guardInQueue) getChunk() []byte {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.newChunkLocked()
}

func (q *guardInQueue) newChunkLocked() []byte {
	if n := len(q.free); n > 0 {
		b := q.free[n-1]
		q.free = q.free[:n-1]
		return b[:0]
	}
	return make([]byte, 0, guardStageMax)
}

func (q *guardInQueue) putChunk(b []byte) {
	if cap(b) != guardStageMax {
		return
	}
	q.mu.Lock()
	if len(q.free) < guardFreeChunks {
		q.free = append(q.free, b[:0])
	}
	q.mu.Unlock()
}

// push queues b (blocking while the queue is full, unless force) and
// returns an empty chunk for the next batch.
func (q *guardInQueue) push(b []byte, force bool) ([]byte, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for !force && q.size >= q.limit && q.err == nil {
		q.notFull.Wait()
	}
	if q.err != nil {
		return b[:0], q.err
	}
	wasEmpty := q.size == 0
	q.size += len(b)
	if n := len(q.chunks); n > 0 && cap(q.chunks[n-1])-len(q.chunks[n-1]) >= len(b) {
		// small batch: copy into the tail chunk rather than queue a
		// mostly empty 32 KiB buffer
		q.chunks[n-1] = append(q.chunks[n-1], b...)
		b = b[:0]
	} else {
		q.chunks = append(q.chunks, b)
		b = q.newChunkLocked()
	}
	if wasEmpty {
		q.notEmpty.Signal()
	}
	return b, nil
}

func (q *guardInQueue) read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	q.mu.Lock()
	if fn := q.takeMarkLocked(true); fn != nil {
		q.mu.Unlock()
		fn()
		q.mu.Lock()
	}
	var due func()
	defer func() {
		q.mu.Unlock()
		if due != nil {
			due()
		}
	}()
	for q.size == 0 && q.err == nil {
		q.notEmpty.Wait()
	}
	if q.size == 0 {
		return 0, q.err
	}
	wasFull := q.size >= q.limit
	n := 0
	for n < len(p) && len(q.chunks) > 0 {
		head := q.chunks[0]
		k := copy(p[n:], head[q.off:])
		n += k
		q.off += k
		if q.off == len(head) {
			q.chunks[0] = nil
			q.chunks = q.chunks[1:]
			q.off = 0
			if cap(head) == guardStageMax && len(q.free) < guardFreeChunks {
				q.free = append(q.free, head[:0])
			}
		}
	}
	q.size -= n
	q.readN += int64(n)
	due = q.takeMarkLocked(false)
	if wasFull && q.size < q.limit {
		q.notFull.Signal()
	}
	return n, nil
}

// fail ends the stream: readers drain what is queued, then get err.
func (q *guardInQueue) fail(err error) {
	q.mu.Lock()
	if q.err == nil {
		q.err = err
	}
	q.notEmpty.Broadcast()
	q.notFull.Broadcast()
	q.mu.Unlock()
}
