package transport

import (
	"bufio"
	"encoding/binary"
	"errors"
	"io"
)

// zSink receives what the inbound parser produces.
type zSink interface {
	// emit hands validated bytes on to zmq4; b is only valid during the call.
	emit(b []byte) error
	// flush is called before the parser may block on the network.
	flush() error
	// ready is called with the peer's validated READY properties and returns
	// the complete READY frame zmq4 will read.
	ready(props []zProp, major, minor byte) ([]byte, error)
	// command is called for PING, PONG and ERROR (name and data after it).
	command(name string, data []byte) error
	// large is called before a frame over LargeFrame (from a request-reply
	// peer) is handed on; it may wait for memory.
	large(size int64) error
	// largeDone is called once the message holding that frame has been
	// handed on whole.
	largeDone() error
}

const (
	pGreeting = iota
	pReady
	pFrames
)

// zParser validates a peer's inbound ZMTP stream one unit at a time. It
// never allocates more than the command limit (bodies are streamed) and never
// trusts a length before checking it.
type zParser struct {
	br       *bufio.Reader
	cfg      GuardConfig
	sink     zSink
	phase    int
	inMsg    bool  // the last data frame had MORE
	msgBytes int64 // bytes of the current multipart message so far
	largeMsg bool  // the current message has a frame over LargeFrame
	frameMax int64 // largest data frame from this peer (by its socket type)
	msgMax   int64 // largest message from this peer
	peerType string
	hdr      [9]byte
	major    byte // peer's ZMTP version
	minor    byte
}

func newZParser(br *bufio.Reader, cfg GuardConfig, sink zSink) *zParser {
	return &zParser{br: br, cfg: cfg, sink: sink, frameMax: cfg.MaxFrame, msgMax: cfg.maxMessage()}
}

// isReqRep: the socket types that send requests (and replies to them).
func isReqRep(socketType string) bool {
	switch socketType {
	case "REQ", "REP", "DEALER", "ROUTER":
		return true
	}
	return false
}

// need returns the next n (<= buffer size) bytes without consuming them.
func (p *zParser) need(n int) ([]byte, error) {
	if p.br.Buffered() < n {
		if err := p.sink.flush(); err != nil {
			return nil, err
		}
	}
	b, err := p.br.Peek(n)
	if err != nil {
		if len(b) > 0 && errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return b, err
	}
	return b, nil
}

// step parses one unit: the greeting, the READY command, or one frame.
func (p *zParser) step() error {
	switch p.phase {
	case pGreeting:
		return p.greeting()
	case pReady:
		return p.readyCmd()
	default:
		return p.frame()
	}
}

func (p *zParser) greeting() error {
	// Validate what has arrived so far before waiting for more, so HTTP or
	// other garbage is refused at once rather than at the handshake timeout.
	for {
		n := p.br.Buffered()
		if n > zGreetingLen {
			n = zGreetingLen
		}
		if n > 0 {
			b, _ := p.br.Peek(n)
			if err := checkGreetingPrefix(b); err != nil {
				return err
			}
			if n == zGreetingLen {
				break
			}
		}
		if _, err := p.need(n + 1); err != nil {
			if b, _ := p.br.Peek(p.br.Buffered()); len(b) > 0 {
				if verr := checkGreetingPrefix(b); verr != nil {
					return verr
				}
			}
			return err
		}
	}
	g, _ := p.br.Peek(zGreetingLen)
	major, minor, server := g[10], g[11], g[32]
	_, _ = p.br.Discard(zGreetingLen)
	// zmq4 gets a canonical greeting it can parse (it wants exactly 0x7F as
	// the signature footer and ignores the rest).
	out := zmq4Greeting
	out[10], out[11], out[32] = major, minor, server
	p.major, p.minor = major, minor
	p.phase = pReady
	return p.sink.emit(out[:])
}

// header reads a frame header; it returns flags and body size.
func (p *zParser) header() (byte, int64, error) {
	b, err := p.need(1)
	if err != nil {
		return 0, 0, err
	}
	flags := b[0]
	if flags&^zFlagMask != 0 {
		return 0, 0, violation(&gstats.badCmds, "reserved frame flag bits set (%#x)", flags)
	}
	hl := 2
	if flags&zFlagLong != 0 {
		hl = 9
	}
	b, err = p.need(hl)
	if err != nil {
		return 0, 0, err
	}
	var size uint64
	if hl == 2 {
		size = uint64(b[1])
	} else {
		size = binary.BigEndian.Uint64(b[1:9])
	}
	if size > uint64(p.frameMax) {
		if p.frameMax < p.cfg.MaxFrame {
			return 0, 0, violation(&gstats.oversized, "frame of %d bytes > LargeFrame %d (the limit for a %s peer)", size, p.frameMax, p.peerType)
		}
		return 0, 0, violation(&gstats.oversized, "frame of %d bytes > MaxFrame %d", size, p.frameMax)
	}
	_, _ = p.br.Discard(hl)
	return flags, int64(size), nil
}

// body reads a whole command body (size already bounded by the caller).
func (p *zParser) body(size int64) ([]byte, error) {
	n := int(size)
	if n <= p.br.Size() {
		b, err := p.need(n)
		if err != nil {
			return nil, err
		}
		_, _ = p.br.Discard(n)
		return b, nil
	}
	if err := p.sink.flush(); err != nil {
		return nil, err
	}
	buf := make([]byte, n)
	if _, err := io.ReadFull(p.br, buf); err != nil {
		return nil, err
	}
	return buf, nil
}

func (p *zParser) readyCmd() error {
	flags, size, err := p.header()
	if err != nil {
		if v, ok := err.(*guardViolation); ok && v.kind == &gstats.oversized {
			return violation(&gstats.badReady, "READY larger than MaxFrame")
		}
		return err
	}
	if flags&(zFlagCommand|zFlagMore) != zFlagCommand {
		return violation(&gstats.badReady, "expected a READY command, got flags %#x", flags)
	}
	if size > p.cfg.maxCommand() {
		return violation(&gstats.badReady, "READY of %d bytes > MaxMetadata %d", size, p.cfg.maxCommand())
	}
	body, err := p.body(size)
	if err != nil {
		return err
	}
	props, err := parseReady(body)
	if err != nil {
		return err
	}
	out, err := p.sink.ready(props, p.major, p.minor)
	if err != nil {
		return err
	}
	st, _ := findProp(props, zPropSocketType)
	p.peerType = string(st)
	if !isReqRep(p.peerType) {
		p.frameMax, p.msgMax = p.cfg.LargeFrame, p.cfg.maxOtherMessage()
	}
	p.phase = pFrames
	return p.sink.emit(out)
}

func (p *zParser) frame() error {
	flags, size, err := p.header()
	if err != nil {
		return err
	}
	if flags&zFlagCommand != 0 {
		return p.commandFrame(flags, size)
	}
	p.msgBytes += size + 64
	if p.msgBytes > p.msgMax {
		return violation(&gstats.oversized, "message larger than %d bytes", p.msgMax)
	}
	if size > p.cfg.LargeFrame {
		if p.largeMsg {
			return violation(&gstats.oversized, "a second frame over LargeFrame %d in one message", p.cfg.LargeFrame)
		}
		if err := p.sink.large(size); err != nil {
			return err
		}
		p.largeMsg = true
	}
	p.inMsg = flags&zFlagMore != 0
	if !p.inMsg {
		p.msgBytes = 0
	}
	if err := p.sink.emit(appendFrameHeader(p.hdr[:0], flags&zFlagMore, size)); err != nil {
		return err
	}
	for left := size; left > 0; {
		n := p.br.Buffered()
		if n == 0 {
			if _, err := p.need(1); err != nil {
				if errors.Is(err, io.EOF) {
					err = io.ErrUnexpectedEOF
				}
				return err
			}
			n = p.br.Buffered()
		}
		if int64(n) > left {
			n = int(left)
		}
		b, _ := p.br.Peek(n)
		if err := p.sink.emit(b); err != nil {
			return err
		}
		_, _ = p.br.Discard(n)
		left -= int64(n)
	}
	if p.largeMsg && !p.inMsg {
		p.largeMsg = false
		return p.sink.largeDone()
	}
	return nil
}

func (p *zParser) commandFrame(flags byte, size int64) error {
	if flags&zFlagMore != 0 {
		return violation(&gstats.badCmds, "command frame with MORE flag")
	}
	if p.inMsg {
		return violation(&gstats.badCmds, "command inside a multipart message")
	}
	if size > p.cfg.maxCommand() {
		return violation(&gstats.badCmds, "command of %d bytes > MaxMetadata", size)
	}
	body, err := p.body(size)
	if err != nil {
		return err
	}
	if len(body) == 0 || int(body[0]) > len(body)-1 {
		return violation(&gstats.badCmds, "malformed command")
	}
	name, data := string(body[1:1+int(body[0])]), body[1+int(body[0]):]
	switch name {
	case "PING", "PONG", "ERROR":
		return p.sink.command(name, data)
	case "SUBSCRIBE", "CANCEL":
		// ZMTP 3.1 subscriptions; zmq4 only knows the 3.0 message form.
		op := byte(1)
		if name == "CANCEL" {
			op = 0
		}
		if int64(len(data))+1 > p.frameMax {
			return violation(&gstats.oversized, "subscription larger than MaxFrame")
		}
		gstats.subCmd.Add(1)
		if err := p.sink.emit(appendFrameHeader(p.hdr[:0], 0, int64(len(data))+1)); err != nil {
			return err
		}
		if err := p.sink.emit([]byte{op}); err != nil {
			return err
		}
		return p.sink.emit(data)
	}
	return violation(&gstats.badCmds, "unexpected command %q", name)
}
