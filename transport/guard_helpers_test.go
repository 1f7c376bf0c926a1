package transport

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log"
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
