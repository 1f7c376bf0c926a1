// Package zmtptest speaks ZMTP by hand, byte by byte, for tests: well-formed
// peers that do exactly what a test needs (complete a handshake, then stop
// reading), and hostile ones (unknown socket types, truncated metadata,
// frames of 2^63 bytes) that a real ZeroMQ library would never send.
package zmtptest

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"testing"
	"time"
)

// ZMTP frame flags.
const (
	FlagMore    = 0x01
	FlagLong    = 0x02
	FlagCommand = 0x04
)

// Greeting is a ZMTP 3.minor greeting with mechanism mech.
func Greeting(minor byte, mech string) []byte {
	g := make([]byte, 64)
	g[0], g[9], g[10], g[11] = 0xFF, 0x7F, 3, minor
	copy(g[12:32], mech)
	return g
}

// ReadyBody is the body of a READY command with the given name, value pairs.
func ReadyBody(props ...string) []byte {
	body := []byte("\x05READY")
	for i := 0; i+1 < len(props); i += 2 {
		body = append(body, byte(len(props[i])))
		body = append(body, props[i]...)
		body = binary.BigEndian.AppendUint32(body, uint32(len(props[i+1])))
		body = append(body, props[i+1]...)
	}
	return body
}

// Frame encodes one frame (a command when cmd, with MORE when more).
func Frame(body []byte, cmd, more bool) []byte {
	var fl byte
	if cmd {
		fl |= FlagCommand
	}
	if more {
		fl |= FlagMore
	}
	if len(body) > 255 {
		b := binary.BigEndian.AppendUint64([]byte{fl | FlagLong}, uint64(len(body)))
		return append(b, body...)
	}
	return append([]byte{fl, byte(len(body))}, body...)
}

// Handshake is a NULL greeting (ZMTP 3.minor) and a READY.
func Handshake(minor byte, sockType string) []byte {
	return append(Greeting(minor, "NULL"), Frame(ReadyBody("Socket-Type", sockType), true, false)...)
}

// Peer is a raw TCP connection speaking (or not) ZMTP by hand.
type Peer struct {
	Conn net.Conn
	R    *bufio.Reader // reads what the other side sends
}

// Dial connects to addr (host:port); the connection closes when the test ends.
func Dial(t testing.TB, addr string) *Peer {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &Peer{Conn: c, R: bufio.NewReader(c)}
}

// Write sends b, failing the test on error.
func (p *Peer) Write(t testing.TB, b []byte) {
	t.Helper()
	_ = p.Conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if _, err := p.Conn.Write(b); err != nil {
		t.Fatal(err)
	}
}

// Handshake sends a greeting + READY and reads the other side's.
func (p *Peer) Handshake(t testing.TB, minor byte, sockType string) {
	t.Helper()
	p.Write(t, Handshake(minor, sockType))
	_ = p.Conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	defer p.Conn.SetReadDeadline(time.Time{})
	if _, err := io.ReadFull(p.R, make([]byte, 64)); err != nil {
		t.Fatalf("reading the greeting: %v", err)
	}
	f, err := p.ReadFrame()
	if err != nil || !f.Cmd || !bytes.HasPrefix(f.Body, []byte("\x05READY")) {
		t.Fatalf("reading READY: %+v %v", f, err)
	}
}

// RawFrame is one frame read from the other side.
type RawFrame struct {
	Cmd, More bool
	Body      []byte
}

// ReadFrame reads one frame (at most 16 MiB).
func (p *Peer) ReadFrame() (RawFrame, error) {
	var f RawFrame
	fl, err := p.R.ReadByte()
	if err != nil {
		return f, err
	}
	var size uint64
	if fl&FlagLong != 0 {
		var b [8]byte
		if _, err := io.ReadFull(p.R, b[:]); err != nil {
			return f, err
		}
		size = binary.BigEndian.Uint64(b[:])
	} else {
		b, err := p.R.ReadByte()
		if err != nil {
			return f, err
		}
		size = uint64(b)
	}
	if size > 16<<20 {
		return f, fmt.Errorf("frame of %d bytes", size)
	}
	f.Cmd, f.More = fl&FlagCommand != 0, fl&FlagMore != 0
	f.Body = make([]byte, size)
	_, err = io.ReadFull(p.R, f.Body)
	return f, err
}

// ReadMessage reads frames (skipping commands) until a whole message.
func (p *Peer) ReadMessage() ([][]byte, error) {
	var frames [][]byte
	for {
		f, err := p.ReadFrame()
		if err != nil {
			return frames, err
		}
		if f.Cmd {
			continue
		}
		frames = append(frames, f.Body)
		if !f.More {
			return frames, nil
		}
	}
}

// ClosedWithin reports whether the other side closes the connection within
// d; everything it sends meanwhile is discarded.
func (p *Peer) ClosedWithin(d time.Duration) bool {
	_ = p.Conn.SetReadDeadline(time.Now().Add(d))
	_, err := io.Copy(io.Discard, p.R)
	var ne net.Error
	return err == nil || !(errors.As(err, &ne) && ne.Timeout())
}

// Request sends body as a REQ does ([empty][body]) and returns the reply's
// body, answering the other side's PINGs meanwhile; an error when the
// connection fails or closes first, or the reply is not [empty][body].
func (p *Peer) Request(body []byte, timeout time.Duration) ([]byte, error) {
	sent := make(chan error, 1)
	go func() {
		_ = p.Conn.SetWriteDeadline(time.Now().Add(timeout))
		_, err := p.Conn.Write(append(Frame(nil, false, true), Frame(body, false, false)...))
		sent <- err
	}()
	_ = p.Conn.SetReadDeadline(time.Now().Add(timeout))
	defer p.Conn.SetReadDeadline(time.Time{})
	var frames [][]byte
	for {
		f, err := p.ReadFrame()
		if err != nil {
			<-sent
			return nil, fmt.Errorf("after %d frames of the reply: %w", len(frames), err)
		}
		if f.Cmd {
			if bytes.HasPrefix(f.Body, []byte("\x04PING")) {
				p.Conn.Write(Frame([]byte("\x04PONG"), true, false))
			}
			continue
		}
		frames = append(frames, f.Body)
		if !f.More {
			break
		}
	}
	if err := <-sent; err != nil {
		return nil, fmt.Errorf("sending: %w", err)
	}
	if len(frames) != 2 || len(frames[0]) != 0 {
		return nil, fmt.Errorf("reply is %d frames, want [empty][body]", len(frames))
	}
	return frames[1], nil
}
