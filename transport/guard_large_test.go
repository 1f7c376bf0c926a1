package transport

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-zeromq/zmq4"

	"chat/internal/zmtptest"
	"chat/proto"
)

// Issue 9: "a request over the frame limit gets silence". A request-reply
// peer's frame up to MaxFrame (16 MiB) reaches the application, which
// answers it with its own error; only beyond that is the connection cut,
// and the cut is logged.

// mimicServer is a ROUTER that answers like roles/server does: every
// request goes through proto.ParseRequest with the default limits, and a
// refused one is answered with proto.ReplyFor (the "request is N bytes,
// the limit is 65536" error for an oversized one).
func mimicServer(t testing.TB) zmq4.Socket {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r, err := ListenSocket(ctx, zmq4.NewRouter, "tcp://127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		lim := proto.DefaultLimits()
		for {
			msg, err := r.Recv()
			if err != nil {
				if ctx.Err() != nil {
					return
				}
				continue
			}
			req, err := SplitRoute(msg.Frames)
			if err != nil {
				continue
			}
			env := proto.Envelope{Service: "ok", Data: proto.Data{"status": "OK"}}
			if parsed, err := proto.ParseRequest(req.Body, lim); err != nil {
				env = proto.ReplyFor(parsed.Service, err)
			}
			_ = r.Send(req.Reply(env.Encode()))
		}
	}()
	t.Cleanup(func() {
		cancel()
		_ = r.Close()
		<-done
	})
	return r
}

// publishOfSize is a publish request whose encoded frame is exactly n bytes.
func publishOfSize(t testing.TB, n int) []byte {
	t.Helper()
	enc := func(k int) []byte {
		return proto.Envelope{Service: "publish", Data: proto.Data{
			"user": "alice", "channel": "geral", "message": strings.Repeat("x", k),
		}}.Encode()
	}
	k := n - len(enc(1<<17)) + 1<<17 // str32 header from 64 KiB on: constant overhead
	if n < 1<<17 {
		k = n - len(enc(0))
		for k > 0 && len(enc(k)) > n {
			k--
		}
	}
	b := enc(k)
	if len(b) != n {
		t.Fatalf("publish request of %d bytes, want %d", len(b), n)
	}
	return b
}

// logCapture collects what the guard logs.
type logCapture struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logCapture) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logCapture) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

func captureGuardLog(t testing.TB) *logCapture {
	t.Helper()
	c := &logCapture{}
	old := guardLog.Load()
	SetLogger(slog.New(slog.NewTextHandler(c, nil)))
	t.Cleanup(func() { guardLog.Store(old) })
	return c
}

func TestGuardLargeRequestAnswered(t *testing.T) {
	logs := captureGuardLog(t)
	srv := mimicServer(t)
	lim := proto.DefaultLimits()

	for _, n := range []int{1 << 20, 1<<20 + 100, 8 << 20, 16 << 20} { // 1<<20 + 100: the publish of a 1 MiB message
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			p := zmtptest.Dial(t, sockAddr(srv))
			p.Handshake(t, 1, "REQ")
			start := time.Now()
			reply, err := p.Request(publishOfSize(t, n), 20*time.Second)
			if err != nil {
				t.Fatalf("a %d-byte request got no answer (%v after %v): silence", n, err, time.Since(start).Round(time.Millisecond))
			}
			env, err := proto.Decode(reply)
			if err != nil {
				t.Fatal(err)
			}
			want := fmt.Sprintf("request is %d bytes, the limit is %d", n, lim.MaxRequest)
			if env.Data["status"] != proto.StatusError || env.Data["description"] != want {
				t.Fatalf("reply %v, want an error %q", env, want)
			}
			t.Logf("%d bytes: answered %q in %v", n, want, time.Since(start).Round(time.Millisecond))
			// the same connection goes on serving
			reply, err = p.Request(publishOfSize(t, 1010), 5*time.Second)
			if err != nil {
				t.Fatalf("connection not usable after the large request: %v", err)
			}
		})
	}

	t.Run("over_MaxFrame", func(t *testing.T) {
		before := Stats().Oversized
		p := zmtptest.Dial(t, sockAddr(srv))
		p.Handshake(t, 1, "REQ")
		over := 16<<20 + 1
		// only the header: the guard must cut on the length alone
		p.Write(t, append(zmtptest.Frame(nil, false, true), zmtptest.Frame(make([]byte, over), false, false)[:9]...))
		if !p.ClosedWithin(5 * time.Second) {
			t.Fatal("a frame over MaxFrame did not cut the connection")
		}
		waitFor(t, 2*time.Second, "the cut to be counted", func() bool { return Stats().Oversized > before })
		want := fmt.Sprintf("frame of %d bytes > MaxFrame %d", over, 16<<20)
		waitFor(t, 2*time.Second, "the cut to be logged", func() bool { return strings.Contains(logs.String(), want) })
	})

	// and a normal client is still served
	if err := reqOnceReply(srv, publishOfSize(t, 1010)); err != nil {
		t.Fatal(err)
	}
}

// reqOnceReply sends body on a zmq4 REQ and waits for any reply.
func reqOnceReply(srv zmq4.Socket, body []byte) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, err := DialSocket(ctx, zmq4.NewReq, DialableEndpoint(srv.Addr()), time.Second)
	if err != nil {
		return err
	}
	defer req.Close()
	if err := req.Send(zmq4.NewMsg(body)); err != nil {
		return err
	}
	got := make(chan error, 1)
	go func() { _, err := req.Recv(); got <- err }()
	select {
	case err := <-got:
		return err
	case <-ctx.Done():
		req.Close()
		<-got
		return ctx.Err()
	}
}

// heapInUse is the live heap after a collection.
func heapInUse() int64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapAlloc)
}

// TestGuardLargeFrameMemory: many clients send a large request each to a
// ROUTER whose application does not read. zmq4 queues 10 messages per
// socket; beyond those, only LargeFrameBudget worth of large frames is
// handed to zmq4 (which allocates a frame whole on its header), the other
// readers wait; once the application reads again, every client is served.
func TestGuardLargeFrameMemory(t *testing.T) {
	const clients, size = 30, 4 << 20
	const zmq4Queue = 10 // routerQReader's channel
	for _, tc := range []struct {
		name   string
		budget int64
	}{
		{"budget_8MiB", 8 << 20},
		{"no_budget", 1 << 40}, // for comparison: what the budget saves
	} {
		t.Run(tc.name, func(t *testing.T) {
			withGuardConfig(t, func(c *GuardConfig) {
				c.MaxFrame, c.LargeFrame, c.LargeFrameBudget = size+64, 256<<10, tc.budget
			})
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			r, err := ListenSocket(ctx, zmq4.NewRouter, "tcp://127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			held0, waiting0 := budgetHeld.Load(), budgetWaiting.Load()

			// one request, shared by every client (so that the clients'
			// own memory does not count)
			request := append(zmtptest.Frame(nil, false, true), zmtptest.Frame(bytes.Repeat([]byte("x"), size), false, false)...)
			base := heapInUse()
			peers := make([]*zmtptest.Peer, clients)
			for i := range peers {
				peers[i] = zmtptest.Dial(t, sockAddr(r))
				peers[i].Handshake(t, 0, "REQ")
				go func(p *zmtptest.Peer) {
					_ = p.Conn.SetWriteDeadline(time.Now().Add(time.Minute))
					p.Conn.Write(request)
				}(peers[i])
			}
			// zmq4 takes zmq4Queue messages into its queue; each of the
			// others is held by zmq4 (blocked on the queue) or waits.
			blocked := int64(clients - zmq4Queue)
			waitFor(t, 30*time.Second, "the readers to settle", func() bool {
				held, waiting := budgetHeld.Load()-held0, budgetWaiting.Load()-waiting0
				return held/size+waiting == blocked && (tc.budget > 1<<30 || held == tc.budget)
			})
			used := heapInUse() - base
			t.Logf("%d clients sent %d MiB each, application not reading: %d readers wait, %.0f MiB of heap in use",
				clients, size>>20, budgetWaiting.Load()-waiting0, float64(used)/(1<<20))
			if tc.budget < 1<<30 {
				// zmq4's queue + the budget + slack for buffers
				if limit := int64(zmq4Queue*size) + tc.budget + 8<<20; used > limit {
					t.Fatalf("%d MiB of heap in use, want at most %d MiB", used>>20, limit>>20)
				}
			}

			// the application reads again: everyone is served
			go func() {
				for {
					msg, err := r.Recv()
					if err != nil {
						return
					}
					req, err := SplitRoute(msg.Frames)
					if err == nil {
						_ = r.Send(req.Reply([]byte(fmt.Sprint(len(req.Body)))))
					}
				}
			}()
			for i, p := range peers {
				_ = p.Conn.SetReadDeadline(time.Now().Add(30 * time.Second))
				m, err := p.ReadMessage()
				if err != nil || len(m) != 2 || string(m[1]) != fmt.Sprint(size) {
					t.Fatalf("client %d: reply %q, %v", i, m, err)
				}
			}
			waitFor(t, 5*time.Second, "the budget to be given back", func() bool { return budgetHeld.Load() == held0 })
		})
	}
}

// Frames over LargeFrame: at most one per message; none from a peer that
// is not request-reply.
func TestGuardLargeFrameRules(t *testing.T) {
	cfg := CurrentGuardConfig()
	logs := captureGuardLog(t)
	big := zmtptest.Frame(make([]byte, cfg.LargeFrame+1), false, true)

	t.Run("two_in_one_message", func(t *testing.T) {
		srv := mimicServer(t)
		before := Stats().Oversized
		p := zmtptest.Dial(t, sockAddr(srv))
		p.Handshake(t, 1, "DEALER")
		go p.Conn.Write(append(append(zmtptest.Frame(nil, false, true), big...), big...))
		if !p.ClosedWithin(5 * time.Second) {
			t.Fatal("a message with two large frames did not cut the connection")
		}
		waitFor(t, 2*time.Second, "the cut to be counted and logged", func() bool {
			return Stats().Oversized > before && strings.Contains(logs.String(), "a second frame over LargeFrame")
		})
	})
	for _, sock := range []struct{ name, peerType string }{{"XPUB", "SUB"}, {"Collector", "PUB"}} {
		t.Run("from_"+sock.peerType, func(t *testing.T) {
			var addr string
			if sock.name == "XPUB" {
				addr = sockAddr(xpubSocket(t))
			} else {
				c, err := ListenCollector(t.Context(), "tcp://127.0.0.1:0", func([][]byte) {})
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { c.Close() })
				addr = c.Addr().String()
			}
			before := Stats().Oversized
			p := zmtptest.Dial(t, addr)
			p.Handshake(t, 1, sock.peerType)
			p.Write(t, big[:9]) // the header says it all
			if !p.ClosedWithin(5 * time.Second) {
				t.Fatalf("a %s peer's frame over LargeFrame did not cut the connection", sock.peerType)
			}
			want := fmt.Sprintf("> LargeFrame %d (the limit for a %s peer)", cfg.LargeFrame, sock.peerType)
			waitFor(t, 2*time.Second, "the cut to be counted and logged", func() bool {
				return Stats().Oversized > before && strings.Contains(logs.String(), want)
			})
		})
	}
}

// A large message goes out whole to a healthy peer even though it is over
// MaxPending, and the messages behind it are not taken for a slow
// consumer's backlog; a peer that reads nothing is still cut off.
func TestGuardLargeMessageOut(t *testing.T) {
	withGuardConfig(t, func(c *GuardConfig) { c.MaxPending = 1 << 20; c.WriteTimeout = time.Second })
	before := Stats().SlowConsumers
	srv := echoRouter(t)
	p := zmtptest.Dial(t, sockAddr(srv))
	p.Handshake(t, 1, "DEALER")
	body := bytes.Repeat([]byte("y"), 8<<20) // 8 × MaxPending
	go func() {
		// echoed back: 8 MiB, then 200 small ones right behind it
		p.Conn.Write(zmtptest.Frame(body, false, false))
		for i := range 200 {
			p.Conn.Write(zmtptest.Frame(fmt.Append(nil, i), false, false))
		}
	}()
	_ = p.Conn.SetReadDeadline(time.Now().Add(20 * time.Second))
	for i := -1; i < 200; i++ {
		m, err := p.ReadMessage()
		if err != nil {
			t.Fatalf("echo %d: %v (slow consumers %d)", i, err, Stats().SlowConsumers-before)
		}
		if i == -1 && !bytes.Equal(m[0], body) || i >= 0 && string(m[0]) != fmt.Sprint(i) {
			t.Fatalf("echo %d mangled", i)
		}
	}
	if n := Stats().SlowConsumers - before; n != 0 {
		t.Fatalf("%d healthy peers cut off as slow consumers", n)
	}
	// a peer that never reads: cut off, large messages or not
	stuck := zmtptest.Dial(t, sockAddr(srv))
	stuck.Handshake(t, 1, "DEALER")
	go func() {
		for range 8 {
			if _, err := stuck.Conn.Write(zmtptest.Frame(body, false, false)); err != nil {
				return
			}
		}
	}()
	waitFor(t, 30*time.Second, "the stuck peer to be cut off", func() bool { return Stats().SlowConsumers > before })
}

// zmq4's REQ reads a reply inside the application's Recv: once read, a
// large reply is the application's, and its share of the (dialed
// connections') budget is given back then, not at the next Recv. Idle REQ
// sockets that each got a large reply must not starve the next one.
func TestGuardLargeRepliesToManyREQ(t *testing.T) {
	const size = 4 << 20
	withGuardConfig(t, func(c *GuardConfig) {
		c.MaxFrame, c.LargeFrame, c.LargeFrameBudget = size, 256<<10, 2*size
	})
	big := bytes.Repeat([]byte("r"), size)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r, err := ListenSocket(ctx, zmq4.NewRouter, "tcp://127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	go func() {
		for {
			msg, err := r.Recv()
			if err != nil {
				return
			}
			if req, err := SplitRoute(msg.Frames); err == nil {
				_ = r.Send(req.Reply(big))
			}
		}
	}()
	for i := range 6 { // three times what the budget holds; each then idles
		req, err := DialSocket(ctx, zmq4.NewReq, DialableEndpoint(r.Addr()), time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer req.Close()
		if err := req.Send(zmq4.NewMsgString("q")); err != nil {
			t.Fatal(err)
		}
		got := make(chan error, 1)
		go func() {
			m, err := req.Recv()
			if err == nil && len(m.Frames[len(m.Frames)-1]) != size {
				err = fmt.Errorf("reply of %d bytes", len(m.Frames[len(m.Frames)-1]))
			}
			got <- err
		}()
		select {
		case err := <-got:
			if err != nil {
				t.Fatalf("REQ %d: %v", i, err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("REQ %d got no reply: the idle REQ sockets before it hold the budget (%d bytes held, %d waiting)",
				i, budgetHeld.Load(), budgetWaiting.Load())
		}
	}
}
