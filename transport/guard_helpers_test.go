package transport

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-zeromq/zmq4"
)

// withGuardConfig installs a test config for the duration of the test.
func withGuardConfig(t testing.TB, edit func(*GuardConfig)) GuardConfig {
	t.Helper()
	old := CurrentGuardConfig()
	c := DefaultGuardConfig()
	edit(&c)
	if err := SetGuardConfig(c); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = SetGuardConfig(old) })
	return c
}

// waitFor polls cond until it holds or the timeout expires.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func sockAddr(s zmq4.Socket) string { return s.Addr().String() }

// echoRouter starts a ROUTER on gtcp that sends every message back.
func echoRouter(t testing.TB) zmq4.Socket {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := zmq4.NewRouter(ctx, zmq4.WithLogger(quietTestLogger()))
	if err := r.Listen(Scheme + "://127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			msg, err := r.Recv()
			if err != nil {
				if ctx.Err() != nil {
					return
				}
				continue
			}
			_ = r.Send(msg)
		}
	}()
	t.Cleanup(func() {
		cancel()
		_ = r.Close()
		<-done
	})
	return r
}

// reqOnce sends body on a fresh REQ socket and waits for the echo.
func reqOnce(scheme, addr, body string, timeout time.Duration) error {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req := zmq4.NewReq(ctx, zmq4.WithLogger(quietTestLogger()), zmq4.WithDialerMaxRetries(0))
	defer req.Close()
	if err := req.Dial(scheme + "://" + addr); err != nil {
		return err
	}
	if err := req.Send(zmq4.NewMsgString(body)); err != nil {
		return err
	}
	got := make(chan error, 1)
	go func() {
		msg, err := req.Recv()
		if err == nil && string(msg.Bytes()) != body {
			err = fmt.Errorf("got %q, want %q", msg.Bytes(), body)
		}
		got <- err
	}()
	select {
	case err := <-got:
		return err
	case <-time.After(timeout):
		req.Close()
		<-got
		return fmt.Errorf("no reply within %v", timeout)
	}
}

func quietTestLogger() *log.Logger { return log.New(io.Discard, "", 0) }

// ---- raw ZMTP peer ----

type rawPeer struct {
	c  net.Conn
	br *bufio.Reader
}

func dialRaw(t testing.TB, addr string) *rawPeer {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &rawPeer{c: c, br: bufio.NewReader(c)}
}

func greeting(minor byte, mech string) []byte {
	g := make([]byte, 64)
	g[0], g[9], g[10], g[11] = 0xFF, 0x7F, 3, minor
	copy(g[12:32], mech)
	return g
}

func (p *rawPeer) write(t testing.TB, b []byte) {
	t.Helper()
	if _, err := p.c.Write(b); err != nil {
		t.Fatal(err)
	}
}

// handshake sends a greeting + READY and reads the server's.
func (p *rawPeer) handshake(t testing.TB, minor byte, sockType string) {
	t.Helper()
	p.write(t, greeting(minor, "NULL"))
	p.write(t, frameBytes(readyBody(zPropSocketType, sockType), true, false))
	_ = p.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	g := make([]byte, 64)
	if _, err := io.ReadFull(p.br, g); err != nil {
		t.Fatalf("reading greeting: %v", err)
	}
	f, err := p.readFrame()
	if err != nil || !f.cmd || !bytes.HasPrefix(f.body, []byte("\x05READY")) {
		t.Fatalf("reading READY: %+v %v", f, err)
	}
	_ = p.c.SetReadDeadline(time.Time{})
}

func readyBody(props ...string) []byte {
	body := []byte("\x05READY")
	for i := 0; i+1 < len(props); i += 2 {
		body = appendProp(body, props[i], []byte(props[i+1]))
	}
	return body
}

func frameBytes(body []byte, cmd, more bool) []byte {
	var fl byte
	if cmd {
		fl |= zFlagCommand
	}
	if more {
		fl |= zFlagMore
	}
	return append(appendFrameHeader(nil, fl, int64(len(body))), body...)
}

type rawFrame struct {
	cmd, more bool
	body      []byte
}

func (p *rawPeer) readFrame() (rawFrame, error) {
	var f rawFrame
	fl, err := p.br.ReadByte()
	if err != nil {
		return f, err
	}
	var size uint64
	if fl&zFlagLong != 0 {
		var b [8]byte
		if _, err := io.ReadFull(p.br, b[:]); err != nil {
			return f, err
		}
		size = binary.BigEndian.Uint64(b[:])
	} else {
		b, err := p.br.ReadByte()
		if err != nil {
			return f, err
		}
		size = uint64(b)
	}
	if size > 1<<24 {
		return f, errors.New("frame too large")
	}
	f.cmd, f.more = fl&zFlagCommand != 0, fl&zFlagMore != 0
	f.body = make([]byte, size)
	_, err = io.ReadFull(p.br, f.body)
	return f, err
}

// closedWithin reports whether the server closes the connection within d
// (everything it sends meanwhile is discarded).
func (p *rawPeer) closedWithin(d time.Duration) bool {
	_ = p.c.SetReadDeadline(time.Now().Add(d))
	_, err := io.Copy(io.Discard, p.br)
	var ne net.Error
	return err == nil || !(errors.As(err, &ne) && ne.Timeout())
}

// ---- python3-zmq ----

// pythonZMQ returns a python interpreter that can import zmq, or "".
func pythonZMQ() string {
	for _, py := range []string{"python3", "/usr/bin/python3"} {
		if path, err := exec.LookPath(py); err == nil {
			if exec.Command(path, "-c", "import zmq").Run() == nil {
				return path
			}
		}
	}
	return ""
}

func requirePython(t *testing.T) string {
	t.Helper()
	py := pythonZMQ()
	if py == "" {
		if os.Getenv("CHAT_REQUIRE_PYTHON") != "" {
			t.Fatal("python3 with zmq is required (CHAT_REQUIRE_PYTHON is set) but not importable")
		}
		t.Skip("python3 zmq not importable")
	}
	return py
}

// runPython runs script with args and returns its combined output.
func runPython(t *testing.T, py string, timeout time.Duration, script string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, py, append([]string{"-c", script}, args...)...)
	var out bytes.Buffer
	var mu sync.Mutex
	cmd.Stdout = &lockedWriter{w: &out, mu: &mu}
	cmd.Stderr = cmd.Stdout
	err := cmd.Run()
	mu.Lock()
	defer mu.Unlock()
	return strings.TrimSpace(out.String()), err
}

type lockedWriter struct {
	w  io.Writer
	mu *sync.Mutex
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
