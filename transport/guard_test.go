package transport

import (
	"bufio"
	"bytes"
	"chat/internal/zmtptest"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-zeromq/zmq4"
)

// ---- helpers specific to these tests ----

func xpubSocket(t testing.TB) zmq4.Socket {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	x := zmq4.NewXPub(ctx, zmq4.WithLogger(quietTestLogger()))
	if err := x.Listen(Scheme + "://127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); _ = x.Close() })
	return x
}

// subReceives dials a SUB to pub and checks it gets a message within timeout.
func subReceives(scheme string, pub zmq4.Socket, timeout time.Duration) error {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sub := zmq4.NewSub(ctx, zmq4.WithLogger(quietTestLogger()), zmq4.WithDialerMaxRetries(0))
	defer sub.Close()
	if err := sub.SetOption(zmq4.OptionSubscribe, ""); err != nil {
		return err
	}
	if err := sub.Dial(scheme + "://" + sockAddr(pub)); err != nil {
		return err
	}
	got := make(chan error, 1)
	go func() { _, err := sub.Recv(); got <- err }()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(timeout)
	for {
		select {
		case err := <-got:
			return err
		case <-tick.C:
			_ = pub.Send(zmq4.NewMsgString("tick"))
		case <-deadline:
			sub.Close()
			<-got
			return fmt.Errorf("no message within %v", timeout)
		}
	}
}

func counter(name string) func() uint64 {
	return func() uint64 {
		s := Stats()
		switch name {
		case "BadGreeting":
			return s.BadGreeting
		case "BadReady":
			return s.BadReady
		case "HandshakeTimeouts":
			return s.HandshakeTimeouts
		case "Incompatible":
			return s.Incompatible
		case "Oversized":
			return s.Oversized
		case "BadCommands":
			return s.BadCommands
		}
		panic(name)
	}
}

// guardGoroutines counts goroutines running guard code.
func guardGoroutines() int {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	count := 0
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "transport.(*guardConn)") || strings.Contains(g, "transport.(*guardListener)") {
			count++
		}
	}
	return count
}

// ---- hostile peers ----

func TestGuardHostileInputs(t *testing.T) {
	withGuardConfig(t, func(c *GuardConfig) { c.HandshakeTimeout = time.Second })

	long := func(n uint64) []byte {
		b := []byte{zFlagLong}
		return binary.BigEndian.AppendUint64(b, n)
	}
	truncated := append(zmtptest.ReadyBody(zPropSocketType, "REQ"), 8)
	truncated = append(truncated, "Identity"...)
	truncated = binary.BigEndian.AppendUint32(truncated, 1000)
	truncated = append(truncated, "abc"...)

	type hostile struct {
		name    string
		stat    string
		payload func(peerType string) []byte
	}
	hs := func(minor byte, typ string, rest ...[]byte) []byte {
		b := append(zmtptest.Greeting(minor, "NULL"), zmtptest.Frame(zmtptest.ReadyBody(zPropSocketType, typ), true, false)...)
		for _, r := range rest {
			b = append(b, r...)
		}
		return b
	}
	cases := []hostile{
		{"unknown Socket-Type", "BadReady", func(string) []byte { return hs(0, "FOO") }},
		{"missing Socket-Type", "BadReady", func(string) []byte {
			return append(zmtptest.Greeting(0, "NULL"), zmtptest.Frame(zmtptest.ReadyBody("Identity", "x"), true, false)...)
		}},
		{"truncated metadata", "BadReady", func(string) []byte {
			return append(zmtptest.Greeting(0, "NULL"), zmtptest.Frame(truncated, true, false)...)
		}},
		{"READY of 2^40 bytes", "BadReady", func(string) []byte {
			return append(zmtptest.Greeting(0, "NULL"), append([]byte{zFlagCommand | zFlagLong}, long(1 << 40)[1:]...)...)
		}},
		{"frame of 2^40 bytes", "Oversized", func(pt string) []byte { return hs(0, pt, long(1<<40)) }},
		{"frame of 2^63 bytes", "Oversized", func(pt string) []byte { return hs(0, pt, long(1<<63)) }},
		{"silent connection", "HandshakeTimeouts", func(string) []byte { return nil }},
		{"HTTP request", "BadGreeting", func(string) []byte { return []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n") }},
		{"wrong mechanism", "BadGreeting", func(string) []byte { return zmtptest.Greeting(0, "PLAIN") }},
		{"ZMTP 2", "BadGreeting", func(string) []byte { g := zmtptest.Greeting(0, "NULL"); g[10] = 2; return g }},
		{"incompatible Socket-Type", "Incompatible", func(string) []byte { return hs(1, "PUSH") }},
		{"unknown command", "BadCommands", func(pt string) []byte { return hs(0, pt, zmtptest.Frame([]byte("\x05HELLOxx"), true, false)) }},
		{"command inside a message", "BadCommands", func(pt string) []byte {
			return hs(0, pt, zmtptest.Frame([]byte("a"), false, true), zmtptest.Frame([]byte("\x04PING\x00\x00"), true, false))
		}},
		{"reserved flag bits", "BadCommands", func(pt string) []byte { return hs(0, pt, []byte{0x80, 0}) }},
	}

	servers := []struct {
		name     string
		peerType string
		start    func(t *testing.T) zmq4.Socket
		served   func(s zmq4.Socket) error
	}{
		{"ROUTER", "REQ", func(t *testing.T) zmq4.Socket { return echoRouter(t) }, func(s zmq4.Socket) error {
			for _, sch := range []string{Scheme, "tcp"} {
				if err := reqOnce(sch, sockAddr(s), "ping-"+sch, time.Second); err != nil {
					return fmt.Errorf("%s REQ: %w", sch, err)
				}
			}
			return nil
		}},
		{"XPUB", "SUB", func(t *testing.T) zmq4.Socket { return xpubSocket(t) }, func(s zmq4.Socket) error {
			for _, sch := range []string{Scheme, "tcp"} {
				if err := subReceives(sch, s, time.Second); err != nil {
					return fmt.Errorf("%s SUB: %w", sch, err)
				}
			}
			return nil
		}},
	}
	for _, srv := range servers {
		t.Run(srv.name, func(t *testing.T) {
			s := srv.start(t)
			for _, h := range cases {
				t.Run(strings.ReplaceAll(h.name, " ", "_"), func(t *testing.T) {
					stat := counter(h.stat)
					before := stat()
					p := zmtptest.Dial(t, sockAddr(s))
					if b := h.payload(srv.peerType); len(b) > 0 {
						p.Write(t, b)
					}
					// the hostile connection stays open while a normal client is served
					if err := srv.served(s); err != nil {
						t.Fatalf("normal client not served next to a hostile peer: %v", err)
					}
					if !p.ClosedWithin(3 * time.Second) {
						t.Fatal("hostile connection was not closed")
					}
					waitFor(t, 2*time.Second, h.stat+" counted", func() bool { return stat() > before })
				})
			}
			// and still serving after all of them
			if err := srv.served(s); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// Many hostile connections at once must not stop the listener either.
func TestGuardManySilentConnections(t *testing.T) {
	withGuardConfig(t, func(c *GuardConfig) { c.HandshakeTimeout = 2 * time.Second })
	r := echoRouter(t)
	for i := 0; i < 50; i++ {
		p := zmtptest.Dial(t, sockAddr(r))
		if i%2 == 0 {
			p.Write(t, zmtptest.Greeting(1, "NULL")[:10]) // half a greeting, then nothing
		}
	}
	if err := reqOnce(Scheme, sockAddr(r), "x", time.Second); err != nil {
		t.Fatal(err)
	}
}

// ---- slow consumer ----

func TestGuardSlowConsumer(t *testing.T) {
	withGuardConfig(t, func(c *GuardConfig) {
		c.MaxPending = 2 << 20
		c.WriteTimeout = 500 * time.Millisecond
	})
	before := Stats().SlowConsumers
	x := xpubSocket(t)

	// the stuck subscriber: handshake, subscribe to everything, never read
	stuck := zmtptest.Dial(t, sockAddr(x))
	stuck.Handshake(t, 0, "SUB")
	stuck.Write(t, zmtptest.Frame([]byte{1}, false, false))

	const nsubs = 9
	var counts, warm [nsubs]atomic.Int64
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	for i := 0; i < nsubs; i++ {
		sub := zmq4.NewSub(ctx, zmq4.WithLogger(quietTestLogger()))
		if err := sub.SetOption(zmq4.OptionSubscribe, ""); err != nil {
			t.Fatal(err)
		}
		if err := sub.Dial(Scheme + "://" + sockAddr(x)); err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				msg, err := sub.Recv()
				if err != nil {
					if ctx.Err() != nil {
						return
					}
					continue
				}
				if len(msg.Frames) > 0 && len(msg.Frames[0]) > 0 {
					switch msg.Frames[0][0] {
					case 'm':
						counts[i].Add(1)
					case 'w':
						warm[i].Add(1)
					}
				}
			}
		}()
		t.Cleanup(func() { _ = sub.Close() })
	}
	t.Cleanup(wg.Wait)
	t.Cleanup(cancel)

	minCount := func() int64 {
		m := counts[0].Load()
		for i := range counts {
			m = min(m, counts[i].Load())
		}
		return m
	}
	// wait until every SUB is connected and subscribed
	waitFor(t, 5*time.Second, "subscribers to connect", func() bool {
		_ = x.Send(zmq4.NewMsgString("warmup"))
		for i := range warm {
			if warm[i].Load() == 0 {
				return false
			}
		}
		return true
	})

	const n, round, size = 12000, 500, 1000
	body := bytes.Repeat([]byte("m"), size)
	sent := 0
	deadline := time.Now().Add(20 * time.Second)
	for sent < n {
		for i := 0; i < round; i++ {
			if err := x.Send(zmq4.NewMsg(body)); err != nil {
				t.Fatal(err)
			}
		}
		sent += round
		// pace the publisher on the healthy subscribers only
		for minCount() < int64(sent-2*round) && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
	}
	waitFor(t, 10*time.Second, "healthy subscribers to get >= 99%", func() bool { return minCount() >= n*99/100 })
	waitFor(t, 5*time.Second, "stuck subscriber to be cut off", func() bool { return Stats().SlowConsumers > before })
	for i := range counts {
		t.Logf("sub %d: %d/%d", i, counts[i].Load(), n)
	}
}

// ---- heartbeats ----

func shortHeartbeats(t *testing.T) GuardConfig {
	return withGuardConfig(t, func(c *GuardConfig) {
		c.HeartbeatIvl = 100 * time.Millisecond
		c.HeartbeatTimeout = 500 * time.Millisecond
	})
}

// A peer that completes the handshake and then neither sends nor answers
// PING (SIGSTOPped, or its packets dropped) is closed within HeartbeatTimeout.
func TestGuardVanishedPeer(t *testing.T) {
	cfg := shortHeartbeats(t)
	before := Stats()
	r := echoRouter(t)
	p := zmtptest.Dial(t, sockAddr(r))
	p.Handshake(t, 1, "DEALER") // ZMTP 3.1, like libzmq: it gets PINGs
	start := time.Now()

	_ = p.Conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	f, err := p.ReadFrame()
	if err != nil {
		t.Fatalf("expected a PING: %v", err)
	}
	if !f.Cmd || !bytes.HasPrefix(f.Body, []byte("\x04PING")) || len(f.Body) < 7 {
		t.Fatalf("expected a ZMTP 3.1 PING (name + 2-byte TTL), got %+v", f)
	}
	if !p.ClosedWithin(5 * time.Second) {
		t.Fatal("silent peer was not closed")
	}
	took := time.Since(start)
	if took > cfg.HeartbeatTimeout+750*time.Millisecond {
		t.Fatalf("silent peer closed after %v, HeartbeatTimeout is %v", took, cfg.HeartbeatTimeout)
	}
	t.Logf("silent peer closed after %v", took)
	waitFor(t, time.Second, "heartbeat timeout counted", func() bool {
		return Stats().HeartbeatTimeouts > before.HeartbeatTimeouts
	})
}

// Any inbound traffic counts as alive: a peer that never answers PING but
// keeps talking stays connected; one that answers PING while otherwise idle
// stays too.
func TestGuardTalkativePeerStaysUp(t *testing.T) {
	cfg := shortHeartbeats(t)
	r := echoRouter(t)
	talk := zmtptest.Dial(t, sockAddr(r))
	talk.Handshake(t, 1, "DEALER")
	pong := zmtptest.Dial(t, sockAddr(r))
	pong.Handshake(t, 1, "DEALER")

	// pong answers every PING, talk ignores them but sends a message often
	pongDone := make(chan error, 1)
	go func() {
		for {
			f, err := pong.ReadFrame()
			if err != nil {
				pongDone <- err
				return
			}
			if f.Cmd && bytes.HasPrefix(f.Body, []byte("\x04PING")) {
				if _, err := pong.Conn.Write(zmtptest.Frame([]byte("\x04PONG"), true, false)); err != nil {
					pongDone <- err
					return
				}
			}
		}
	}()
	talkDone := make(chan error, 1)
	go func() {
		for {
			if _, err := talk.ReadFrame(); err != nil {
				talkDone <- err
				return
			}
		}
	}()
	end := time.Now().Add(3 * cfg.HeartbeatTimeout)
	for time.Now().Before(end) {
		talk.Write(t, zmtptest.Frame([]byte("hi"), false, false))
		select {
		case err := <-talkDone:
			t.Fatalf("talkative peer disconnected: %v", err)
		case err := <-pongDone:
			t.Fatalf("PONGing peer disconnected: %v", err)
		case <-time.After(cfg.HeartbeatIvl / 2):
		}
	}
}

// Idle healthy peers are never cut off: guard <-> guard (both answer PING),
// plain zmq4 over tcp:// (never PINGed: it would hand PING to the app).
func TestGuardIdleZmq4PeersStayUp(t *testing.T) {
	cfg := shortHeartbeats(t)
	before := Stats()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r := zmq4.NewRouter(ctx, zmq4.WithLogger(quietTestLogger()))
	defer r.Close()
	if err := r.Listen(Scheme + "://127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	ids := make(chan string, 16)
	go func() {
		for {
			msg, err := r.Recv()
			if err != nil {
				if ctx.Err() != nil {
					return
				}
				continue
			}
			ids <- string(msg.Frames[len(msg.Frames)-1]) + "=" + fmt.Sprintf("%x", msg.Frames[0])
			_ = r.Send(msg)
		}
	}()
	for _, sch := range []string{Scheme, "tcp"} {
		req := zmq4.NewReq(ctx, zmq4.WithLogger(quietTestLogger()))
		defer req.Close()
		if err := req.Dial(sch + "://" + sockAddr(r)); err != nil {
			t.Fatal(err)
		}
		var seen []string
		for round := 0; round < 2; round++ {
			if err := req.Send(zmq4.NewMsgString(sch)); err != nil {
				t.Fatalf("%s round %d: %v", sch, round, err)
			}
			if _, err := req.Recv(); err != nil {
				t.Fatalf("%s round %d: %v", sch, round, err)
			}
			seen = append(seen, <-ids)
			if round == 0 {
				time.Sleep(3 * cfg.HeartbeatTimeout) // idle: the point of the test
			}
		}
		if seen[0] != seen[1] {
			t.Fatalf("%s: connection was replaced while idle: %v", sch, seen)
		}
	}
	s := Stats()
	if s.HeartbeatTimeouts != before.HeartbeatTimeouts {
		t.Fatalf("healthy idle peer timed out: %+v", s)
	}
	if s.PingsSent == before.PingsSent || s.PongsReceived == before.PongsReceived || s.PingsAnswered == before.PingsAnswered {
		t.Fatalf("guard <-> guard heartbeats did not flow: %+v", s)
	}
}

// ---- ROUTER identities ----

func TestGuardDuplicateIdentity(t *testing.T) {
	before := Stats().IdentitiesRewritten
	r := echoRouter(t)
	var peers []*zmtptest.Peer
	for i := 0; i < 2; i++ {
		p := zmtptest.Dial(t, sockAddr(r))
		p.Write(t, zmtptest.Greeting(1, "NULL"))
		p.Write(t, zmtptest.Frame(zmtptest.ReadyBody(zPropSocketType, "DEALER", zPropIdentity, "same"), true, false))
		peers = append(peers, p)
	}
	for i, p := range peers {
		if _, err := io.ReadFull(p.R, make([]byte, 64)); err != nil { // greeting
			t.Fatal(err)
		}
		p.Write(t, zmtptest.Frame([]byte(fmt.Sprintf("from-%d", i)), false, false))
	}
	for i, p := range peers {
		_ = p.Conn.SetReadDeadline(time.Now().Add(3 * time.Second))
		for {
			f, err := p.ReadFrame()
			if err != nil {
				t.Fatalf("peer %d: %v", i, err)
			}
			if f.Cmd {
				continue
			}
			if want := fmt.Sprintf("from-%d", i); string(f.Body) != want {
				t.Fatalf("peer %d got %q, want %q", i, f.Body, want)
			}
			break
		}
	}
	if Stats().IdentitiesRewritten <= before {
		t.Fatal("duplicate identity not counted")
	}
}

// ---- units ----

func TestGuardConfigValidate(t *testing.T) {
	if err := DefaultGuardConfig().Validate(); err != nil {
		t.Fatal(err)
	}
	bad := []func(*GuardConfig){
		func(c *GuardConfig) { c.HandshakeTimeout = 0 },
		func(c *GuardConfig) { c.MaxFrame = 0 },
		func(c *GuardConfig) { c.MaxMetadata = 10 },
		func(c *GuardConfig) { c.WriteTimeout = -1 },
		func(c *GuardConfig) { c.MaxPending = 0 },
		func(c *GuardConfig) { c.HeartbeatIvl = 0 },
		func(c *GuardConfig) { c.HeartbeatTimeout = c.HeartbeatIvl },
		func(c *GuardConfig) { c.MaxMessage = 1 },
		func(c *GuardConfig) { c.MaxFrame = 1<<40 + 1 },
		func(c *GuardConfig) { c.LargeFrame = 0 },
		func(c *GuardConfig) { c.LargeFrame = c.MaxFrame + 1 },
		func(c *GuardConfig) { c.LargeFrameBudget = c.MaxFrame - 1 },
		func(c *GuardConfig) { c.MaxConnsPerAddr = 0 },
		func(c *GuardConfig) { c.IdleTimeout = c.HeartbeatTimeout },
	}
	for i, edit := range bad {
		c := DefaultGuardConfig()
		edit(&c)
		if c.Validate() == nil {
			t.Errorf("case %d: invalid config accepted: %+v", i, c)
		}
		if SetGuardConfig(c) == nil {
			t.Errorf("case %d: SetGuardConfig accepted an invalid config", i)
		}
	}
	if err := DefaultFanoutConfig().Validate(); err != nil {
		t.Fatal(err)
	}
	for _, c := range []FanoutConfig{{MaxTopics: 0, MaxTopicLen: 1}, {MaxTopics: 1, MaxTopicLen: 0}} {
		if c.Validate() == nil {
			t.Errorf("invalid fanout config accepted: %+v", c)
		}
		if _, err := ListenFanoutConfig(t.Context(), "tcp://127.0.0.1:0", c); err == nil {
			t.Errorf("ListenFanoutConfig accepted %+v", c)
		}
	}
}

// PING and PONG are only ever injected between messages.
func TestGuardInjectAtMessageBoundary(t *testing.T) {
	c := newGuardConn(nil, DefaultGuardConfig(), nil)
	c.noMoreFlush = true // no flusher: inspect pending directly
	c.oPhase, c.outReady, c.inReady = oFrames, true, true
	c.wmu.Lock()
	defer c.wmu.Unlock()
	write := func(b []byte) {
		if err := c.trackLocked(b); err != nil {
			t.Fatal(err)
		}
	}
	big := bytes.Repeat([]byte("b"), 300)
	write([]byte{zFlagMore, 1}) // frame 1 header (MORE)
	c.injPing = true
	c.injectLocked()
	write([]byte("a"))                            // frame 1 body
	write(appendFrameHeader(nil, zFlagMore, 300)) // frame 2 header (long, MORE)
	write(big[:100])                              // partial body
	c.injPong, c.pongCtx = true, []byte("ctx")    //
	c.injectLocked()                              //
	write(big[100:])                              // rest of frame 2
	write([]byte{0, 0})                           // last frame, empty
	if c.injPing || c.injPong {
		t.Fatal("commands not injected at the end of the message")
	}
	want := append([]byte{zFlagMore, 1, 'a'}, appendFrameHeader(nil, zFlagMore, 300)...)
	want = append(want, big...)
	want = append(want, 0, 0)
	want = appendCommand(want, "PONG", []byte("ctx"))
	want = appendCommand(want, "PING", []byte{0, 0})
	if got := bytes.Join(c.pending, nil); !bytes.Equal(got, want) || c.pendingLen != len(want) {
		t.Fatalf("outbound stream:\n got %q\nwant %q", got, want)
	}
}

// Closing sockets leaves no guard goroutine behind.
func TestGuardNoGoroutineLeak(t *testing.T) {
	func() {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		r := zmq4.NewRouter(ctx, zmq4.WithLogger(quietTestLogger()))
		if err := r.Listen(Scheme + "://127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
		go func() {
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
		for i := 0; i < 5; i++ {
			if err := reqOnce(Scheme, sockAddr(r), "x", 2*time.Second); err != nil {
				t.Fatal(err)
			}
		}
		p := zmtptest.Dial(t, sockAddr(r))
		p.Write(t, zmtptest.Greeting(1, "NULL")[:20]) // stuck in handshake when the socket closes
		cancel()
		_ = r.Close()
	}()
	waitFor(t, 5*time.Second, "guard goroutines to exit", func() bool { return guardGoroutines() == 0 })
}

// Close flushes what zmq4 wrote before it: a REQ that sends a large request
// and closes at once still delivers it.
func TestGuardCloseFlushes(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	body := bytes.Repeat([]byte("z"), 3<<20)
	got := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- err
			return
		}
		defer c.Close()
		p := &zmtptest.Peer{Conn: c, R: bufio.NewReader(c)}
		_, _ = c.Write(append(zmtptest.Greeting(0, "NULL"), zmtptest.Frame(zmtptest.ReadyBody(zPropSocketType, "ROUTER"), true, false)...))
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.ReadFull(p.R, make([]byte, 64)); err != nil {
			got <- err
			return
		}
		var frames [][]byte
		for len(frames) < 3 {
			f, err := p.ReadFrame()
			if err != nil {
				got <- fmt.Errorf("after %d frames: %w", len(frames), err)
				return
			}
			if !f.Cmd {
				frames = append(frames, f.Body)
			}
		}
		if len(frames[0]) != 0 || !bytes.Equal(frames[1], []byte("hdr")) || !bytes.Equal(frames[2], body) {
			got <- errors.New("request mangled")
			return
		}
		got <- nil
	}()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req := zmq4.NewReq(ctx, zmq4.WithLogger(quietTestLogger()))
	if err := req.Dial(Scheme + "://" + ln.Addr().String()); err != nil {
		t.Fatal(err)
	}
	if err := req.Send(zmq4.NewMsgFrom([]byte("hdr"), body)); err != nil {
		t.Fatal(err)
	}
	_ = req.Close()
	if err := <-got; err != nil {
		t.Fatal(err)
	}
}
