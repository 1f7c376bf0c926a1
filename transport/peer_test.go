package transport

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-zeromq/zmq4"
	"go.uber.org/goleak"

	"chat/internal/testnet"
)

// checkPeerLeaks fails the test if it leaves goroutines behind. Call it
// first: its cleanup then runs last, after every other cleanup.
func checkPeerLeaks(t *testing.T) {
	t.Helper()
	opt := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, opt) })
}

// testState reports how many sockets p has connected so far and whether
// one is live now.
func (p *Peer) testState() (dials int, connected bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.dials, p.conn != nil
}

func newTestPeer(t *testing.T, cfg PeerConfig) *Peer {
	t.Helper()
	p, err := NewPeer(cfg, slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn})))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// peerHandler decides what the test server does with one request: reply
// after delay, or (ok false) drop it.
type peerHandler func(r Routed) (reply []byte, delay time.Duration, ok bool)

func echoHandler(maxDelay time.Duration) peerHandler {
	return func(r Routed) ([]byte, time.Duration, bool) {
		var d time.Duration
		if maxDelay > 0 {
			d = rand.N(maxDelay)
		}
		return append([]byte("echo:"), r.Body...), d, true
	}
}

// peerTestServer is a server's front end as roles/server/server.go
// readFront runs it: a ROUTER on the guarded transport, SplitRoute on
// every message, replies r.Reply(body) sent from other goroutines.
type peerTestServer struct {
	ep          string
	sock        zmq4.Socket
	handle      peerHandler
	seen        atomic.Int64 // requests read
	beforeReply func()       // run before each reply is sent, when not nil
	cancel      context.CancelFunc
	wg          sync.WaitGroup
	once        sync.Once
}

// startPeerServer listens on ep (tcp://host:port, port 0 for any), retrying
// for a while when the address is still taken.
func startPeerServer(t *testing.T, ep string, handle peerHandler) *peerTestServer {
	t.Helper()
	return startPeerServerHook(t, ep, handle, nil)
}

// startPeerServerHook is startPeerServer with beforeReply run before each
// reply is sent.
func startPeerServerHook(t *testing.T, ep string, handle peerHandler, beforeReply func()) *peerTestServer {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var sock zmq4.Socket
	var err error
	deadline := time.Now().Add(5 * time.Second)
	for {
		if sock, err = ListenSocket(ctx, zmq4.NewRouter, ep); err == nil {
			break
		}
		if time.Now().After(deadline) {
			cancel()
			t.Fatalf("listen on %s: %v", ep, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	s := &peerTestServer{ep: BoundEndpoint(sock), sock: sock, handle: handle, beforeReply: beforeReply, cancel: cancel}
	s.wg.Go(func() { s.read(ctx) })
	t.Cleanup(s.Close)
	return s
}

func (s *peerTestServer) read(ctx context.Context) {
	for {
		msg, err := s.sock.Recv()
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			continue // a peer went away
		}
		r, err := SplitRoute(msg.Frames)
		if err != nil {
			continue
		}
		s.seen.Add(1)
		reply, delay, ok := s.handle(r)
		if !ok {
			continue
		}
		send := func() {
			if s.beforeReply != nil {
				s.beforeReply()
			}
			s.sock.Send(r.Reply(reply))
		}
		if delay == 0 {
			send()
			continue
		}
		s.wg.Go(func() {
			t := time.NewTimer(delay)
			defer t.Stop()
			select {
			case <-t.C:
				send()
			case <-ctx.Done():
			}
		})
	}
}

// Close stops the server the way a process going away does: its socket
// closes, its connections with it.
func (s *peerTestServer) Close() {
	s.once.Do(func() {
		s.cancel()
		s.sock.Close()
		s.wg.Wait()
	})
}

// doAsync runs p.Do in a goroutine; the result arrives on the channel.
func doAsync(p *Peer, ctx context.Context, body string) <-chan peerResult {
	ch := make(chan peerResult, 1)
	go func() {
		b, err := p.Do(ctx, []byte(body))
		ch <- peerResult{b, err}
	}()
	return ch
}

func await(t *testing.T, ch <-chan peerResult, within time.Duration, what string) peerResult {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(within):
		t.Fatalf("%s: no result within %v", what, within)
		return peerResult{}
	}
}

// doEcho sends body and checks the echo server's reply.
func doEcho(ctx context.Context, p *Peer, body string) error {
	got, err := p.Do(ctx, []byte(body))
	if err != nil {
		return fmt.Errorf("Do(%q): %w", body, err)
	}
	if want := "echo:" + body; string(got) != want {
		return fmt.Errorf("Do(%q) = %q, want %q", body, got, want)
	}
	return nil
}

// mustDo is doEcho from the test goroutine.
func mustDo(t *testing.T, p *Peer, body string) {
	t.Helper()
	if err := doEcho(t.Context(), p, body); err != nil {
		t.Fatal(err)
	}
}

// goDo is doEcho from another goroutine: a failure is reported, not fatal.
func goDo(t *testing.T, p *Peer, body string) {
	if err := doEcho(t.Context(), p, body); err != nil {
		t.Error(err)
	}
}

// TestPeerFramingOverRouter checks the framing Peer relies on, against the
// server's ROUTER (SplitRoute + Reply) and against a REP: a DEALER sending
// [id][empty][body] gets [id][empty][reply] back, and the ROUTER sees
// [identity][id][empty][body].
func TestPeerFramingOverRouter(t *testing.T) {
	checkPeerLeaks(t)
	routes := make(chan [][]byte, 1)
	srv := startPeerServer(t, "tcp://127.0.0.1:0", func(r Routed) ([]byte, time.Duration, bool) {
		routes <- r.Route
		return append([]byte("echo:"), r.Body...), 0, true
	})

	ctx := t.Context()
	dealer, err := DialSocket(ctx, zmq4.NewDealer, srv.ep, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer dealer.Close()
	id := binary.BigEndian.AppendUint64(nil, 0x0102030405060708)
	if err := dealer.Send(zmq4.NewMsgFrom(id, []byte{}, []byte("hello"))); err != nil {
		t.Fatal(err)
	}
	var route [][]byte
	select {
	case route = <-routes:
	case <-time.After(2 * time.Second):
		t.Fatal("the ROUTER got nothing within 2s")
	}
	if len(route) != 3 || len(route[0]) == 0 || !bytes.Equal(route[1], id) || len(route[2]) != 0 {
		t.Fatalf("ROUTER route = %q, want [identity][id][empty]", route)
	}
	got := recvWithin(t, dealer, 2*time.Second)
	want := [][]byte{id, {}, []byte("echo:hello")}
	if !framesEqual(got, want) {
		t.Fatalf("DEALER got %q, want %q", got, want)
	}
}

func TestPeerFramingOverREP(t *testing.T) {
	checkPeerLeaks(t)
	ctx, cancel := context.WithCancel(context.Background())
	rep, err := ListenSocket(ctx, zmq4.NewRep, "tcp://127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() { // a REP serves one request at a time, from one goroutine
		for {
			msg, err := rep.Recv()
			if err != nil {
				if ctx.Err() != nil {
					return
				}
				continue
			}
			rep.Send(zmq4.NewMsg(append([]byte("echo:"), msg.Frames[len(msg.Frames)-1]...)))
		}
	})
	defer func() { cancel(); rep.Close(); wg.Wait() }()
	ep := BoundEndpoint(rep)

	dealer, err := DialSocket(ctx, zmq4.NewDealer, ep, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	id := binary.BigEndian.AppendUint64(nil, 42)
	if err := dealer.Send(zmq4.NewMsgFrom(id, []byte{}, []byte("hello"))); err != nil {
		t.Fatal(err)
	}
	got := recvWithin(t, dealer, 2*time.Second)
	dealer.Close()
	if want := [][]byte{id, {}, []byte("echo:hello")}; !framesEqual(got, want) {
		t.Fatalf("DEALER got %q from REP, want %q", got, want)
	}

	p := newTestPeer(t, DefaultPeerConfig(ep))
	var g sync.WaitGroup
	for i := range 8 {
		g.Go(func() { goDo(t, p, fmt.Sprintf("rep-%d", i)) })
	}
	g.Wait()
	p.Close()
}

func recvWithin(t *testing.T, s zmq4.Socket, within time.Duration) [][]byte {
	t.Helper()
	ch := make(chan zmq4.Msg, 1)
	go func() {
		m, _ := s.Recv()
		ch <- m
	}()
	select {
	case m := <-ch:
		return m.Frames
	case <-time.After(within):
		s.Close()
		<-ch
		t.Fatalf("no reply within %v", within)
		return nil
	}
}

func framesEqual(a, b [][]byte) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !bytes.Equal(a[i], b[i]) {
			return false
		}
	}
	return true
}

// TestPeerConcurrentRequests: 64 callers at once, each gets its own reply
// although the server answers out of order.
func TestPeerConcurrentRequests(t *testing.T) {
	checkPeerLeaks(t)
	var mu sync.Mutex
	ids := map[uint64]bool{}
	var badRoute atomic.Value
	echo := echoHandler(10 * time.Millisecond)
	srv := startPeerServer(t, "tcp://127.0.0.1:0", func(r Routed) ([]byte, time.Duration, bool) {
		if len(r.Route) != 3 || len(r.Route[1]) != 8 || len(r.Route[2]) != 0 {
			badRoute.Store(fmt.Sprintf("%q", r.Route))
		} else {
			mu.Lock()
			ids[binary.BigEndian.Uint64(r.Route[1])] = true
			mu.Unlock()
		}
		return echo(r)
	})
	serverOnly := goleak.IgnoreCurrent()
	p := newTestPeer(t, DefaultPeerConfig(srv.ep))

	const callers, each = 64, 4
	var wg sync.WaitGroup
	errs := make(chan error, callers*each)
	for c := range callers {
		wg.Go(func() {
			for i := range each {
				body := fmt.Sprintf("caller-%d-req-%d", c, i)
				got, err := p.Do(t.Context(), []byte(body))
				if err != nil {
					errs <- fmt.Errorf("%s: %w", body, err)
				} else if string(got) != "echo:"+body {
					errs <- fmt.Errorf("%s got %q", body, got)
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if r := badRoute.Load(); r != nil {
		t.Errorf("server saw route %s, want [identity][8-byte id][empty]", r)
	}
	mu.Lock()
	if len(ids) != callers*each {
		t.Errorf("%d distinct request ids, want %d", len(ids), callers*each)
	}
	mu.Unlock()
	if dials, _ := p.testState(); dials != 1 {
		t.Errorf("%d sockets dialed, want 1", dials)
	}
	// Closed, the Peer leaves nothing behind although its server is still up.
	p.Close()
	goleak.VerifyNone(t, serverOnly)
}

// TestPeerMaxInFlight: no more than MaxInFlight requests reach the server
// at once; the rest wait for a slot and still succeed.
func TestPeerMaxInFlight(t *testing.T) {
	checkPeerLeaks(t)
	var outstanding, peak atomic.Int64
	srv := startPeerServerHook(t, "tcp://127.0.0.1:0", func(r Routed) ([]byte, time.Duration, bool) {
		n := outstanding.Add(1)
		for {
			old := peak.Load()
			if n <= old || peak.CompareAndSwap(old, n) {
				break
			}
		}
		return append([]byte("echo:"), r.Body...), 2 * time.Millisecond, true // held a little, so callers pile up
	}, func() { outstanding.Add(-1) })
	cfg := DefaultPeerConfig(srv.ep)
	cfg.MaxInFlight = 4
	p := newTestPeer(t, cfg)
	var wg sync.WaitGroup
	for i := range 32 {
		wg.Go(func() { goDo(t, p, fmt.Sprint("r", i)) })
	}
	wg.Wait()
	switch got := peak.Load(); {
	case got > 4:
		t.Fatalf("%d requests at the server at once, MaxInFlight is 4", got)
	case got < 2:
		t.Fatalf("at most %d request at the server at once: requests were not concurrent", got)
	}
}

// TestPeerDroppedRequestTimesOut: a request the server drops times out with
// ErrNoReply while concurrent ones succeed, and the socket is kept since
// replies kept coming; a dropped request with no other traffic makes the
// peer look dead: the socket is dropped and the next Do dials again.
func TestPeerDroppedRequestTimesOut(t *testing.T) {
	checkPeerLeaks(t)
	var drops atomic.Int64
	echo := echoHandler(0)
	srv := startPeerServer(t, "tcp://127.0.0.1:0", func(r Routed) ([]byte, time.Duration, bool) {
		if string(r.Body) == "drop" {
			drops.Add(1)
			return nil, 0, false
		}
		return echo(r)
	})
	cfg := DefaultPeerConfig(srv.ep)
	cfg.Timeout = 500 * time.Millisecond
	p := newTestPeer(t, cfg)
	mustDo(t, p, "warm-up")

	start := time.Now()
	dropped := doAsync(p, t.Context(), "drop")
	waitFor(t, 2*time.Second, "the server to get the dropped request", func() bool { return drops.Load() == 1 })
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() { goDo(t, p, fmt.Sprint("ok-", i)) })
	}
	wg.Wait()
	r := await(t, dropped, 3*time.Second, "dropped request")
	if !errors.Is(r.err, ErrNoReply) || errors.Is(r.err, ErrPeerLost) {
		t.Fatalf("dropped request: %v, want ErrNoReply (without ErrPeerLost)", r.err)
	}
	if el := time.Since(start); el < cfg.Timeout {
		t.Fatalf("dropped request failed after %v, before its Timeout %v", el, cfg.Timeout)
	}
	if dials, connected := p.testState(); dials != 1 || !connected {
		t.Fatalf("after a timeout with replies flowing: dials=%d connected=%v, want the socket kept", dials, connected)
	}
	mustDo(t, p, "after")

	// Alone, a dropped request leaves the socket silent for a Timeout.
	_, err := p.Do(t.Context(), []byte("drop"))
	if !errors.Is(err, ErrNoReply) {
		t.Fatalf("lone dropped request: %v, want ErrNoReply", err)
	}
	if _, connected := p.testState(); connected {
		t.Fatal("socket kept although nothing arrived for a whole Timeout")
	}
	mustDo(t, p, "redialed")
	if dials, _ := p.testState(); dials != 2 {
		t.Fatalf("dials = %d, want 2", dials)
	}
}

// TestPeerSilentPeer: a peer that answers nothing (a hung process, a host
// gone without FIN): every request in flight fails within about one
// Timeout, the socket is dropped, and once the peer answers again the next
// Do works on a fresh socket.
func TestPeerSilentPeer(t *testing.T) {
	checkPeerLeaks(t)
	var answer atomic.Bool
	echo := echoHandler(0)
	srv := startPeerServer(t, "tcp://127.0.0.1:0", func(r Routed) ([]byte, time.Duration, bool) {
		if !answer.Load() {
			return nil, 0, false
		}
		return echo(r)
	})
	cfg := DefaultPeerConfig(srv.ep)
	cfg.Timeout = 300 * time.Millisecond
	p := newTestPeer(t, cfg)

	start := time.Now()
	var wg sync.WaitGroup
	for i := range 16 {
		wg.Go(func() {
			_, err := p.Do(t.Context(), []byte(fmt.Sprint("r", i)))
			if !errors.Is(err, ErrNoReply) {
				t.Errorf("request %d: %v, want ErrNoReply", i, err)
			}
		})
	}
	wg.Wait()
	if el := time.Since(start); el > cfg.Timeout+time.Second {
		t.Fatalf("requests to a silent peer took %v, Timeout is %v", el, cfg.Timeout)
	}
	if dials, connected := p.testState(); dials != 1 || connected {
		t.Fatalf("dials=%d connected=%v, want the silent socket dropped", dials, connected)
	}
	answer.Store(true)
	mustDo(t, p, "back")
	if dials, _ := p.testState(); dials != 2 {
		t.Fatalf("dials = %d, want 2", dials)
	}
}

// TestPeerServerRestart: the server goes away (requests in flight fail at
// once, without waiting for their Timeout) and comes back on the same port;
// Do works again within about Timeout + DialTimeout.
func TestPeerServerRestart(t *testing.T) {
	checkPeerLeaks(t)
	var held atomic.Int64
	echo := echoHandler(0)
	handler := func(r Routed) ([]byte, time.Duration, bool) {
		if string(r.Body) == "hold" {
			held.Add(1)
			return nil, 0, false
		}
		return echo(r)
	}
	srv := startPeerServer(t, "tcp://127.0.0.1:0", handler)
	ep := srv.ep
	cfg := DefaultPeerConfig(ep)
	cfg.Timeout = 2 * time.Second
	p := newTestPeer(t, cfg)
	mustDo(t, p, "before")

	inFlight := doAsync(p, t.Context(), "hold")
	waitFor(t, 2*time.Second, "the held request to reach the server", func() bool { return held.Load() == 1 })
	start := time.Now()
	srv.Close()
	r := await(t, inFlight, cfg.Timeout+time.Second, "request in flight when the server went away")
	if !errors.Is(r.err, ErrPeerLost) || !errors.Is(r.err, ErrNoReply) {
		t.Fatalf("request in flight: %v, want ErrPeerLost and ErrNoReply", r.err)
	}
	if el := time.Since(start); el >= cfg.Timeout {
		t.Fatalf("lost connection noticed after %v, not before the Timeout %v", el, cfg.Timeout)
	}

	// While it is down: a dial error, within DialTimeout.
	start = time.Now()
	if _, err := p.Do(t.Context(), []byte("down")); err == nil || errors.Is(err, ErrNoReply) {
		t.Fatalf("Do while the server is down: %v, want a dial error", err)
	} else if el := time.Since(start); el > cfg.DialTimeout+time.Second {
		t.Fatalf("dial error after %v, DialTimeout is %v", el, cfg.DialTimeout)
	}

	srv2 := startPeerServer(t, ep, handler)
	if srv2.ep != ep {
		t.Fatalf("restarted on %s, want %s", srv2.ep, ep)
	}
	start = time.Now()
	deadline := start.Add(cfg.Timeout + cfg.DialTimeout + 2*time.Second)
	for {
		got, err := p.Do(t.Context(), []byte("after"))
		if err == nil {
			if string(got) != "echo:after" {
				t.Fatalf("got %q", got)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("peer unreachable %v after the restart: %v", time.Since(start), err)
		}
	}
	t.Logf("reachable again %v after the restart", time.Since(start).Round(time.Millisecond))
}

// TestPeerUnreachable: nothing listens: concurrent callers get the dial
// error within DialTimeout; once a server listens there, Do works.
func TestPeerUnreachable(t *testing.T) {
	checkPeerLeaks(t)
	ep := testnet.FreeEndpoint(t)
	cfg := DefaultPeerConfig(ep)
	cfg.DialTimeout = 300 * time.Millisecond
	p := newTestPeer(t, cfg)

	start := time.Now()
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			_, err := p.Do(t.Context(), []byte("x"))
			if err == nil || errors.Is(err, ErrNoReply) || !strings.Contains(err.Error(), "connect to") {
				t.Errorf("Do to nothing: %v, want a dial error", err)
			}
		})
	}
	wg.Wait()
	if el := time.Since(start); el > cfg.DialTimeout+time.Second {
		t.Fatalf("dial errors after %v, DialTimeout is %v", el, cfg.DialTimeout)
	}
	if dials, _ := p.testState(); dials != 0 {
		t.Fatalf("dials = %d, want 0", dials)
	}

	srv := startPeerServer(t, ep, echoHandler(0))
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, err := p.Do(t.Context(), []byte("x")); err == nil {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("still unreachable with a server on %s: %v", srv.ep, err)
		}
	}
}

// TestPeerContextEnds: a caller whose ctx ends gets ctx.Err() at once; the
// socket is kept (the peer is not to blame) and its late reply is dropped.
func TestPeerContextEnds(t *testing.T) {
	checkPeerLeaks(t)
	release := make(chan struct{})
	var releaseOnce sync.Once
	unblock := func() { releaseOnce.Do(func() { close(release) }) }
	var slow atomic.Int64
	echo := echoHandler(0)
	srv := startPeerServer(t, "tcp://127.0.0.1:0", func(r Routed) ([]byte, time.Duration, bool) {
		if string(r.Body) == "slow" {
			slow.Add(1)
			<-release // blocks the server's reader: nothing else is answered meanwhile
		}
		return echo(r)
	})
	t.Cleanup(unblock) // runs before the server's Close
	cfg := DefaultPeerConfig(srv.ep)
	cfg.Timeout = 5 * time.Second
	p := newTestPeer(t, cfg)
	mustDo(t, p, "warm-up")

	ctx, cancel := context.WithCancel(t.Context())
	res := doAsync(p, ctx, "slow")
	waitFor(t, 2*time.Second, "the slow request to reach the server", func() bool { return slow.Load() == 1 })
	cancel()
	if r := await(t, res, time.Second, "cancelled request"); !errors.Is(r.err, context.Canceled) {
		t.Fatalf("cancelled request: %v, want context.Canceled", r.err)
	}
	dctx, dcancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer dcancel()
	if _, err := p.Do(dctx, []byte("queued")); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("request past its deadline: %v, want context.DeadlineExceeded", err)
	}
	unblock() // the server answers "slow" and "queued" now: nobody waits for them
	mustDo(t, p, "after")
	if dials, connected := p.testState(); dials != 1 || !connected {
		t.Fatalf("dials=%d connected=%v, want the socket kept", dials, connected)
	}
}

// TestPeerCloseInFlight: Close returns promptly with requests in flight,
// which fail with ErrPeerClosed; so does every later Do.
func TestPeerCloseInFlight(t *testing.T) {
	checkPeerLeaks(t)
	srv := startPeerServer(t, "tcp://127.0.0.1:0", func(Routed) ([]byte, time.Duration, bool) { return nil, 0, false })
	cfg := DefaultPeerConfig(srv.ep)
	cfg.Timeout = 10 * time.Second
	serverOnly := goleak.IgnoreCurrent()
	p := newTestPeer(t, cfg)

	const n = 16
	results := make([]<-chan peerResult, n)
	for i := range n {
		results[i] = doAsync(p, t.Context(), fmt.Sprint("r", i))
	}
	waitFor(t, 3*time.Second, "every request to reach the server", func() bool { return srv.seen.Load() == n })
	start := time.Now()
	closed := make(chan error, 1)
	go func() { closed <- p.Close() }()
	select {
	case <-closed:
	case <-time.After(2 * time.Second):
		t.Fatal("Close did not return within 2s")
	}
	for i, ch := range results {
		if r := await(t, ch, time.Second, fmt.Sprint("request ", i)); !errors.Is(r.err, ErrPeerClosed) {
			t.Errorf("request %d: %v, want ErrPeerClosed", i, r.err)
		}
	}
	t.Logf("closed with %d requests in flight in %v", n, time.Since(start).Round(time.Millisecond))
	if _, err := p.Do(t.Context(), []byte("late")); !errors.Is(err, ErrPeerClosed) {
		t.Fatalf("Do after Close: %v, want ErrPeerClosed", err)
	}
	if err := p.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	goleak.VerifyNone(t, serverOnly) // the server is still up
}

// TestPeerCloseWhileDialing: Close aborts a dial under way.
func TestPeerCloseWhileDialing(t *testing.T) {
	checkPeerLeaks(t)
	cfg := DefaultPeerConfig(testnet.FreeEndpoint(t))
	cfg.DialTimeout = 10 * time.Second
	p := newTestPeer(t, cfg)
	res := doAsync(p, t.Context(), "x")
	waitFor(t, 2*time.Second, "the dial to start", func() bool {
		p.mu.Lock()
		defer p.mu.Unlock()
		return p.dial != nil
	})
	closed := make(chan struct{})
	go func() { p.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(2 * time.Second):
		t.Fatal("Close did not abort the dial within 2s")
	}
	if r := await(t, res, time.Second, "request waiting for the dial"); !errors.Is(r.err, ErrPeerClosed) {
		t.Fatalf("request waiting for the dial: %v, want ErrPeerClosed", r.err)
	}
}

func TestPeerConfigValidate(t *testing.T) {
	good := []string{"tcp://127.0.0.1:5555", "tcp://[::1]:5555", "tcp://server-1.example:7000", Scheme + "://127.0.0.1:1"}
	for _, ep := range good {
		if err := DefaultPeerConfig(ep).Validate(); err != nil {
			t.Errorf("Validate(%q): %v", ep, err)
		}
	}
	bad := []string{"", "127.0.0.1:5555", "tcp://", "tcp://host", "tcp://host:", "tcp://host:0",
		"tcp://host:65536", "tcp://host:http", "udp://host:1", "tcp://:5555", "tcp://*:5555", "ipc:///tmp/x"}
	for _, ep := range bad {
		if err := DefaultPeerConfig(ep).Validate(); err == nil {
			t.Errorf("Validate(%q) = nil, want an error", ep)
		}
		if _, err := NewPeer(DefaultPeerConfig(ep), nil); err == nil {
			t.Errorf("NewPeer(%q) = nil error", ep)
		}
	}
	for _, edit := range []func(*PeerConfig){
		func(c *PeerConfig) { c.Timeout = -1 },
		func(c *PeerConfig) { c.DialTimeout = -1 },
		func(c *PeerConfig) { c.MaxInFlight = -1 },
	} {
		c := DefaultPeerConfig("tcp://127.0.0.1:5555")
		edit(&c)
		if err := c.Validate(); err == nil {
			t.Errorf("Validate(%+v) = nil, want an error", c)
		}
	}

	p, err := NewPeer(PeerConfig{Endpoint: "tcp://127.0.0.1:5555"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if want := DefaultPeerConfig("tcp://127.0.0.1:5555"); p.cfg != want {
		t.Errorf("zero fields filled as %+v, want %+v", p.cfg, want)
	}
	if p.Endpoint() != "tcp://127.0.0.1:5555" {
		t.Errorf("Endpoint() = %q", p.Endpoint())
	}
}

// TestPeerIdentity: with PeerConfig.Identity set, the server's ROUTER sees
// that identity as frame 0 of every request, on the first socket and on
// the one dialled after the server restarted; without it, a generated one.
func TestPeerIdentity(t *testing.T) {
	checkPeerLeaks(t)
	routes := make(chan [][]byte, 16)
	handler := func(r Routed) ([]byte, time.Duration, bool) {
		routes <- r.Route
		return append([]byte("echo:"), r.Body...), 0, true
	}
	srv := startPeerServer(t, "tcp://127.0.0.1:0", handler)
	nextRoute := func(what string) [][]byte {
		t.Helper()
		select {
		case r := <-routes:
			return r
		case <-time.After(2 * time.Second):
			t.Fatalf("%s: the ROUTER got nothing within 2s", what)
			return nil
		}
	}
	checkID := func(what string, want string) {
		t.Helper()
		route := nextRoute(what)
		if len(route) != 3 || string(route[0]) != want {
			t.Fatalf("%s: ROUTER route = %q, want [%q][id][empty]", what, route, want)
		}
	}

	cfg := DefaultPeerConfig(srv.ep)
	cfg.Identity = "server-a"
	p := newTestPeer(t, cfg)
	for i := range 3 {
		mustDo(t, p, fmt.Sprintf("req-%d", i))
		checkID(fmt.Sprintf("request %d", i), "server-a")
	}

	// Another Peer without an Identity: zmq4 generates one, not ours.
	anon := newTestPeer(t, DefaultPeerConfig(srv.ep))
	mustDo(t, anon, "anon")
	if route := nextRoute("anonymous peer"); len(route) != 3 || len(route[0]) == 0 || string(route[0]) == "server-a" {
		t.Fatalf("anonymous peer: ROUTER route = %q, want a generated identity", route)
	}
	anon.Close()

	// The server restarts: the new socket the Peer dials has the same identity.
	ep := srv.ep
	srv.Close()
	srv2 := startPeerServer(t, ep, handler)
	if srv2.ep != ep {
		t.Fatalf("restarted on %s, want %s", srv2.ep, ep)
	}
	deadline := time.Now().Add(cfg.Timeout + cfg.DialTimeout + 2*time.Second)
	for {
		if err := doEcho(t.Context(), p, "after"); err == nil {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("peer unreachable after the restart: %v", err)
		}
	}
	checkID("after the restart", "server-a")
	for len(routes) > 0 { // more attempts, if any reached the server: the same identity
		checkID("after the restart", "server-a")
	}
	if dials, _ := p.testState(); dials < 2 {
		t.Fatalf("dials = %d: the Peer did not dial a new socket", dials)
	}
}

func TestPeerConfigIdentity(t *testing.T) {
	for _, tc := range []struct {
		id string
		ok bool
	}{
		{"", true}, {"a", true}, {"server-1", true}, {strings.Repeat("x", 255), true},
		{strings.Repeat("x", 256), false}, {"\x00abc", false},
	} {
		c := DefaultPeerConfig("tcp://127.0.0.1:5555")
		c.Identity = tc.id
		if err := c.Validate(); (err == nil) != tc.ok {
			t.Errorf("Validate(Identity %q): %v, want ok=%v", tc.id, err, tc.ok)
		}
	}
}
