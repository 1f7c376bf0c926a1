package transport

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-zeromq/zmq4"

	"chat/internal/zmtptest"
)

// Issue 9: "idle handshaken peers are never dropped": 1,500 idle ZMTP
// connections to a broker limited to 1,100 file descriptors stopped all
// service until they closed.

// dialFrom connects to addr from the local address src (any 127.x.y.z
// works on Linux), so tests can play many source addresses on loopback.
func dialFrom(src, addr string) (*zmtptest.Peer, error) {
	d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	return &zmtptest.Peer{Conn: c, R: bufio.NewReader(c)}, nil
}

// idleHandshake completes a handshake as sockType (ZMTP 3.minor) and
// reports whether the other side answered it (false: refused, closed).
func idleHandshake(p *zmtptest.Peer, minor byte, sockType string) bool {
	_ = p.Conn.SetDeadline(time.Now().Add(10 * time.Second))
	defer p.Conn.SetDeadline(time.Time{})
	if _, err := p.Conn.Write(zmtptest.Handshake(minor, sockType)); err != nil {
		return false
	}
	if _, err := io.ReadFull(p.R, make([]byte, 64)); err != nil {
		return false
	}
	f, err := p.ReadFrame()
	return err == nil && f.Cmd && bytes.HasPrefix(f.Body, []byte("\x05READY"))
}

// openIdle opens n connections from src, each completing a ZMTP 3.0
// handshake (never PINGed: plain zmq4's version) and then silent. It
// returns the accepted ones and how many were refused.
func openIdle(t *testing.T, src, addr string, n int) (open []*zmtptest.Peer, refused int) {
	t.Helper()
	var mu sync.Mutex
	var wg sync.WaitGroup
	sem := make(chan struct{}, 32)
	for range n {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			p, err := dialFrom(src, addr)
			if err != nil {
				mu.Lock()
				refused++
				mu.Unlock()
				return
			}
			ok := idleHandshake(p, 0, "DEALER")
			mu.Lock()
			defer mu.Unlock()
			if !ok {
				p.Conn.Close()
				refused++
				return
			}
			open = append(open, p)
		})
	}
	wg.Wait()
	t.Cleanup(func() {
		for _, p := range open {
			p.Conn.Close()
		}
	})
	return open, refused
}

func idleTestConfig(c *GuardConfig) {
	c.HeartbeatIvl = 100 * time.Millisecond
	c.HeartbeatTimeout = 500 * time.Millisecond
	c.IdleTimeout = 1500 * time.Millisecond
	c.MaxConnsPerAddr = 50
}

// TestGuardIdlePeers: connections from one address over the cap are
// refused at once, handshaken peers that send and receive nothing are
// closed after IdleTimeout, while a peer that answers PING, a subscriber
// that only receives, and a normal client (from another address) are
// served throughout.
func TestGuardIdlePeers(t *testing.T) {
	cfg := withGuardConfig(t, idleTestConfig)
	logs := captureGuardLog(t)
	r := echoRouter(t)
	addr := sockAddr(r)
	start := time.Now()
	before := Stats()

	const attempts = 80
	idle, refused := openIdle(t, "127.0.0.2", addr, attempts)
	t.Logf("%d idle connections from 127.0.0.2: %d accepted, %d refused", attempts, len(idle), refused)
	if len(idle) > 50 {
		t.Errorf("%d connections accepted from one address, the cap is 50", len(idle))
	}
	if err := reqOnce(Scheme, addr, "normal", 2*time.Second); err != nil {
		t.Fatalf("a normal client from another address was not served: %v", err)
	}
	if got := Stats().AddrRefused - before.AddrRefused; got != uint64(refused) {
		t.Errorf("AddrRefused grew by %d, %d were refused", got, refused)
	}
	if n := strings.Count(logs.String(), "connections refused: too many from one address"); n != 1 {
		t.Errorf("refusals logged %d times, want once (per address per minute):\n%s", n, logs.String())
	}

	// a ZMTP 3.1 peer that answers every PING but sends nothing else
	ponger, err := dialFrom("127.0.0.3", addr)
	if err != nil || !idleHandshake(ponger, 1, "DEALER") {
		t.Fatalf("ponger: %v", err)
	}
	defer ponger.Conn.Close()
	pongerDone := make(chan error, 1)
	go func() {
		for {
			f, err := ponger.ReadFrame()
			if err != nil {
				pongerDone <- err
				return
			}
			if f.Cmd && bytes.HasPrefix(f.Body, []byte("\x04PING")) {
				ponger.Conn.Write(zmtptest.Frame([]byte("\x04PONG"), true, false))
			}
		}
	}()

	// a plain (ZMTP 3.0, never PINGed) subscriber that only receives
	x := xpubSocket(t)
	sub, err := dialFrom("127.0.0.4", sockAddr(x))
	if err != nil || !idleHandshake(sub, 0, "SUB") {
		t.Fatalf("subscriber: %v", err)
	}
	defer sub.Conn.Close()
	sub.Write(t, zmtptest.Frame([]byte{1}, false, false)) // subscribe to everything, then silence
	subDone := make(chan error, 1)
	go func() {
		for {
			if _, err := sub.ReadFrame(); err != nil {
				subDone <- err
				return
			}
		}
	}()
	pubStop := make(chan struct{})
	pubDone := make(chan struct{})
	go func() {
		defer close(pubDone)
		tick := time.NewTicker(cfg.HeartbeatIvl)
		defer tick.Stop()
		for {
			select {
			case <-pubStop:
				return
			case <-tick.C:
				_ = x.Send(zmq4.NewMsgString("news"))
			}
		}
	}()
	defer func() { close(pubStop); <-pubDone }()

	// every idle one is closed after IdleTimeout; everyone else stays
	idleTimeout := cfg.IdleTimeout
	for i, p := range idle {
		if !p.ClosedWithin(idleTimeout + 5*time.Second - time.Since(start)) {
			t.Fatalf("idle connection %d of %d still open %v after it was opened", i, len(idle), time.Since(start).Round(time.Millisecond))
		}
	}
	t.Logf("%d idle connections closed within %v", len(idle), time.Since(start).Round(time.Millisecond))
	waitFor(t, 2*time.Second, "idle timeouts counted", func() bool {
		return Stats().IdleTimeouts-before.IdleTimeouts >= uint64(len(idle))
	})
	select {
	case err := <-pongerDone:
		t.Fatalf("a peer answering PING was closed: %v", err)
	case err := <-subDone:
		t.Fatalf("a subscriber that receives data was closed: %v", err)
	default:
	}
	if err := reqOnce(Scheme, addr, "normal", 2*time.Second); err != nil {
		t.Fatalf("a normal client was not served: %v", err)
	}
	// the address may connect again once its connections are gone
	again, refused := openIdle(t, "127.0.0.2", addr, 10)
	if len(again) != 10 {
		t.Fatalf("after its idle connections closed, 127.0.0.2 got %d of 10 (%d refused)", len(again), refused)
	}
}

// ---- the scenario: a process with a low file limit ----

const helperEnv = "CHAT_GUARD_TEST_HELPER"

// TestGuardHelperProcess is not a test: run by TestGuardIdleFloodFileLimit
// as a child process, it serves an echo ROUTER and prints its address.
func TestGuardHelperProcess(t *testing.T) {
	if os.Getenv(helperEnv) != "router" {
		t.Skip("helper process")
	}
	c := DefaultGuardConfig()
	if v := os.Getenv(helperEnv + "_IDLE"); v != "" {
		if err := setIdleForHelper(&c, v); err != nil {
			t.Fatal(err)
		}
	}
	if err := SetGuardConfig(c); err != nil {
		t.Fatal(err)
	}
	r := echoRouter(t)
	soft, hard, _ := FileLimit()
	fmt.Printf("ADDR %s NOFILE %d %d\n", sockAddr(r), soft, hard)
	_, _ = io.Copy(io.Discard, os.Stdin) // until the parent closes it
}

// TestGuardIdleFloodFileLimit: a ROUTER in a process whose file limit is
// 1,100 gets 1,500 idle connections from one address and must still serve
// a normal client.
func TestGuardIdleFloodFileLimit(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a process")
	}
	const flood, nofile = 1500, 1100
	cmd := exec.Command("sh", "-c", fmt.Sprintf(`ulimit -n %d && exec "$0" "$@"`, nofile), os.Args[0], "-test.run=^TestGuardHelperProcess$", "-test.v")
	cmd.Env = append(os.Environ(), helperEnv+"=router", helperEnv+"_IDLE=3s")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { stdin.Close(); cmd.Wait() }()
	sc := bufio.NewScanner(out)
	var addr string
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "ADDR "); ok {
			f := strings.Fields(rest)
			addr = f[0]
			t.Logf("helper: %s (RLIMIT_NOFILE soft %s hard %s)", addr, f[2], f[3])
			if n, _ := strconv.Atoi(f[2]); n > nofile {
				t.Fatalf("helper's file limit is %d, want %d", n, nofile)
			}
			break
		}
	}
	if addr == "" {
		t.Fatal("helper printed no address (run it alone to see why)")
	}
	go io.Copy(io.Discard, out)
	if err := reqOnce(Scheme, addr, "before", 2*time.Second); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	idle, refused := openIdle(t, "127.0.0.2", addr, flood)
	t.Logf("%d idle connections from 127.0.0.2: %d accepted, %d refused, in %v", flood, len(idle), refused, time.Since(start).Round(time.Millisecond))
	if err := reqOnce(Scheme, addr, "during", 3*time.Second); err != nil {
		t.Fatalf("with %d idle connections open, a normal client was not served: %v", len(idle), err)
	}
	closed := 0
	for _, p := range idle {
		if p.ClosedWithin(3*time.Second + 10*time.Second - time.Since(start)) {
			closed++
		}
	}
	t.Logf("%d of %d idle connections closed by the helper within %v", closed, len(idle), time.Since(start).Round(time.Millisecond))
	if closed != len(idle) {
		t.Fatalf("%d idle connections still open", len(idle)-closed)
	}
	if err := reqOnce(Scheme, addr, "after", 3*time.Second); err != nil {
		t.Fatal(err)
	}
}

func setIdleForHelper(c *GuardConfig, v string) error {
	d, err := time.ParseDuration(v)
	c.HeartbeatIvl, c.HeartbeatTimeout, c.IdleTimeout = 100*time.Millisecond, 500*time.Millisecond, d
	return err
}
