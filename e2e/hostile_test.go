package e2e

// Hostile peers against every listening socket of the system (issue 3):
// each input of ZMQ4-NOTES.md that crashes or stalls plain zmq4 is sent on a
// raw TCP connection that then stays open, and the process must keep
// serving new clients within a second. The matrix runs against an
// in-process cluster (where the guard's counters prove each input was seen
// and refused for the right reason) and against real `chat broker` and
// `chat server` processes (where the process must not exit).
//
// This file also holds the raw-ZMTP peer and the subprocess helpers that
// slowsub_test.go and vanish_test.go use.

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/go-zeromq/zmq4"

	"chat/internal/clustertest"
	"chat/internal/testnet"
	"chat/internal/zmtptest"
	"chat/proto"
	"chat/roles/server"
	"chat/transport"
)

// serveWithin is how fast a normal client must be served next to a hostile
// connection (issue 3: "within a second").
const serveWithin = time.Second

// hostileInput is one thing a hostile peer sends.
type hostileInput struct {
	name string
	// counter is the guard counter that must grow when the input is
	// refused (in-process runs only).
	counter func(transport.GuardStats) uint64
	// bytes returns what to send; peerType is a socket type the listening
	// socket accepts, for the inputs that first complete a valid handshake.
	// nil: send nothing.
	bytes func(peerType string) []byte
}

func hostileInputs() []hostileInput {
	long := func(n uint64) []byte { return binary.BigEndian.AppendUint64([]byte{zmtptest.FlagLong}, n) }
	truncated := append(zmtptest.ReadyBody("Socket-Type", "DEALER"), 8)
	truncated = append(truncated, "Identity"...)
	truncated = binary.BigEndian.AppendUint32(truncated, 1000) // claims 1000 bytes of value...
	truncated = append(truncated, "abc"...)                    // ...and the frame ends after 3
	badReady := func(s transport.GuardStats) uint64 { return s.BadReady }
	badGreeting := func(s transport.GuardStats) uint64 { return s.BadGreeting }
	oversized := func(s transport.GuardStats) uint64 { return s.Oversized }
	return []hostileInput{
		// first, so the handshake timeout runs while the others are tried
		{"silent connection", func(s transport.GuardStats) uint64 { return s.HandshakeTimeouts }, func(string) []byte { return nil }},
		{"unknown Socket-Type", badReady, func(string) []byte { return zmtptest.Handshake(0, "FOO") }},
		{"missing Socket-Type", badReady, func(string) []byte {
			return append(zmtptest.Greeting(0, "NULL"), zmtptest.Frame(zmtptest.ReadyBody("Identity", "x"), true, false)...)
		}},
		{"truncated metadata", badReady, func(string) []byte {
			return append(zmtptest.Greeting(0, "NULL"), zmtptest.Frame(truncated, true, false)...)
		}},
		{"frame length 2^40", oversized, func(pt string) []byte { return append(zmtptest.Handshake(0, pt), long(1<<40)...) }},
		{"frame length 2^63", oversized, func(pt string) []byte { return append(zmtptest.Handshake(0, pt), long(1<<63)...) }},
		{"HTTP request", badGreeting, func(string) []byte { return []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n") }},
		{"wrong mechanism", badGreeting, func(string) []byte { return zmtptest.Greeting(0, "PLAIN") }},
	}
}

// chatEndpoints are the listening sockets of one broker + one server.
type chatEndpoints struct {
	server, front, back, pubIn, pubOut string // tcp://host:port
}

// listening returns every listening socket with a socket type it accepts.
func (e chatEndpoints) listening() []struct{ name, ep, peerType string } {
	return []struct{ name, ep, peerType string }{
		{"server", e.server, "DEALER"},
		{"broker_front", e.front, "REQ"},
		{"broker_back", e.back, "DEALER"},
		{"broker_pub-in", e.pubIn, "PUB"},
		{"broker_pub-out", e.pubOut, "SUB"},
	}
}

// TestHostilePeersInProcess runs the matrix against an in-process cluster:
// every input on every listening socket, a normal request through the
// broker and directly to the server answered within a second, publications
// still flowing, and the guard refusing the input for the right reason.
func TestHostilePeersInProcess(t *testing.T) {
	// A shorter handshake timeout than the default 5s, so the silent
	// connections are closed soon after the matrix; still longer than the
	// longest serving check (3 × serveWithin).
	cfg := setGuardConfigForTest(t, func(c *transport.GuardConfig) { c.HandshakeTimeout = 3*serveWithin + 500*time.Millisecond })
	c := startTolerantCluster(t, 1)
	ep := chatEndpoints{
		server: c.Servers[0].Addr(), front: c.Broker.FrontAddr(), back: c.Broker.BackAddr(),
		pubIn: c.Broker.PubInAddr(), pubOut: c.Broker.PubOutAddr(),
	}
	h := newServingChecker(t, ep)

	type silent struct {
		p      *zmtptest.Peer
		opened time.Time
	}
	var silents []silent
	silentBefore := transport.Stats().HandshakeTimeouts
	top := t // hostile connections stay open until the whole test ends
	for _, sock := range ep.listening() {
		t.Run(sock.name, func(t *testing.T) {
			for _, in := range hostileInputs() {
				t.Run(strings.ReplaceAll(in.name, " ", "_"), func(t *testing.T) {
					before := in.counter(transport.Stats())
					p := zmtptest.Dial(top, hostPort(sock.ep))
					opened := time.Now()
					if b := in.bytes(sock.peerType); b != nil {
						p.Write(t, b)
					}
					h.check(t)
					if in.bytes(sock.peerType) == nil {
						if p.ClosedWithin(time.Millisecond) {
							t.Fatalf("the silent connection was closed before the check ended (after %v)", time.Since(opened))
						}
						// the guard closes it after HandshakeTimeout; checked
						// at the end, so the other inputs run next to it
						silents = append(silents, silent{p, opened})
						return
					}
					if !p.ClosedWithin(3 * time.Second) {
						t.Fatal("the guard did not close the hostile connection")
					}
					clustertest.WaitFor(t, 2*time.Second, in.name+" counted by the guard", func() bool {
						return in.counter(transport.Stats()) > before
					})
				})
			}
		})
	}
	t.Run("silent_connections_closed", func(t *testing.T) {
		for i, s := range silents {
			left := time.Until(s.opened.Add(cfg.HandshakeTimeout + 3*time.Second))
			if !s.p.ClosedWithin(max(left, 100*time.Millisecond)) {
				t.Fatalf("silent connection %d still open %v after it was opened (HandshakeTimeout %v)",
					i, time.Since(s.opened).Round(time.Millisecond), cfg.HandshakeTimeout)
			}
		}
		if got := transport.Stats().HandshakeTimeouts - silentBefore; got < uint64(len(silents)) {
			t.Fatalf("HandshakeTimeouts grew by %d, want >= %d", got, len(silents))
		}
	})
	h.check(t)
	t.Logf("normal clients next to hostile peers: %s", h.summary())
}

// TestHostilePeersRealProcesses runs the same matrix against real `chat
// broker` and `chat server` processes: after each input, with the hostile
// connection still open, both processes are still running and serving.
func TestHostilePeersRealProcesses(t *testing.T) {
	bin := buildChat(t)
	ep := chatEndpoints{server: testnet.FreeEndpoint(t), front: testnet.FreeEndpoint(t), back: testnet.FreeEndpoint(t), pubIn: testnet.FreeEndpoint(t), pubOut: testnet.FreeEndpoint(t)}
	b := startChatProcess(t, bin, "broker", "--front", ep.front, "--back", ep.back, "--pub-in", ep.pubIn, "--pub-out", ep.pubOut,
		"--heartbeat-interval", "200ms", "--server-timeout", "3s")
	s := startChatProcess(t, bin, "server", "--name", "hostile", "--listen", ep.server, "--data", t.TempDir(),
		"--broker-back", ep.back, "--broker-pub", ep.pubIn, "--reference", "",
		"--heartbeat-interval", "200ms", "--broker-timeout", "3s")
	waitForServing(t, ep.front, 15*time.Second, b, s)
	h := newServingChecker(t, ep)

	procs := []*chatProcess{b, s}
	top := t // hostile connections stay open until the whole test ends
	dead := func() error {
		for _, p := range procs {
			if err := p.alive(); err != nil {
				return err
			}
		}
		return nil
	}
	for _, sock := range ep.listening() {
		t.Run(sock.name, func(t *testing.T) {
			for _, in := range hostileInputs() {
				t.Run(strings.ReplaceAll(in.name, " ", "_"), func(t *testing.T) {
					p := zmtptest.Dial(top, hostPort(sock.ep))
					if b := in.bytes(sock.peerType); b != nil {
						p.Write(t, b)
					}
					served := h.serve()
					if served != nil {
						// a crash shows up as not served first: give the
						// process a moment to be seen exiting
						for _, p := range procs {
							select {
							case <-p.exited:
							case <-time.After(500 * time.Millisecond):
							}
						}
					}
					if err := dead(); err != nil {
						t.Fatalf("%s on %s: %v", in.name, sock.name, err)
					}
					if served != nil {
						t.Fatal(served)
					}
				})
				if dead() != nil {
					t.Fatal("a process died: the rest of the matrix would only repeat it")
				}
			}
		})
		if dead() != nil {
			t.FailNow()
		}
	}
	t.Logf("normal clients next to hostile peers: %s", h.summary())
}

// startTolerantCluster is startCluster with heartbeat timeouts that a
// loaded 2-core machine running the race detector does not trip: these
// tests measure other things than the broker's server timeout.
func startTolerantCluster(t *testing.T, n int) *cluster {
	t.Helper()
	bcfg := clustertest.BrokerConfig()
	bcfg.HeartbeatInterval, bcfg.ServerTimeout, bcfg.RequestTimeout = 200*time.Millisecond, 3*time.Second, 5*time.Second
	return clustertest.StartWith(t, n, bcfg, func(s *server.Config) {
		s.HeartbeatInterval, s.BrokerTimeout = 200*time.Millisecond, 3*time.Second
	})
}

// setGuardConfigForTest installs a guard config edited from the default
// for the rest of t (the config is global: such tests must not run in
// parallel), and restores the previous one after.
func setGuardConfigForTest(t *testing.T, edit func(*transport.GuardConfig)) transport.GuardConfig {
	t.Helper()
	old := transport.CurrentGuardConfig()
	cfg := transport.DefaultGuardConfig()
	edit(&cfg)
	if err := transport.SetGuardConfig(cfg); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := transport.SetGuardConfig(old); err != nil {
			t.Error(err)
		}
	})
	return cfg
}

// ---- serving checks ----

// servingChecker checks that a broker + server serve new clients: fresh
// connections, since a stalled accept loop only hurts those.
type servingChecker struct {
	ep  chatEndpoints
	pub *transport.Client // publishes posts through the broker

	mu     sync.Mutex
	n      int
	worst  map[string]time.Duration
	probes int
}

const hostileChannel = "hostile-probe"

func newServingChecker(t *testing.T, ep chatEndpoints) *servingChecker {
	h := &servingChecker{ep: ep, worst: map[string]time.Duration{}}
	cfg := transport.DefaultClientConfig(ep.front)
	cfg.Timeout = 5 * time.Second
	cl, err := transport.NewClient(cfg, clustertest.Log())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close() })
	h.pub = cl
	env, err := callEnv(cl, proto.Channel, proto.Data{"channel": hostileChannel})
	if err != nil {
		t.Fatal(err)
	}
	if env.Data["status"] != proto.StatusSuccess && !strings.Contains(fmt.Sprint(env.Data["description"]), "exists") {
		t.Fatalf("creating the probe channel: %v", env.Data)
	}
	return h
}

func (h *servingChecker) record(what string, d time.Duration) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.worst[what] = max(h.worst[what], d)
}

func (h *servingChecker) summary() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return fmt.Sprintf("%d checks; slowest: request via broker %v, request direct %v, publication via broker %v, publication via pub-in %v",
		h.n, h.worst["front"].Round(time.Millisecond), h.worst["direct"].Round(time.Millisecond),
		h.worst["post"].Round(time.Millisecond), h.worst["raw"].Round(time.Millisecond))
}

// check fails t unless, on new connections, a request through the broker
// and one directly to the server are answered with success within
// serveWithin, and a new subscriber on pub-out gets both a post published
// through the broker and a publication of a new publisher on pub-in within
// serveWithin.
func (h *servingChecker) check(t *testing.T) {
	t.Helper()
	if err := h.serve(); err != nil {
		t.Fatal(err)
	}
}

func (h *servingChecker) serve() error {
	h.mu.Lock()
	h.n++
	h.mu.Unlock()
	for _, via := range []struct{ name, ep string }{{"front", h.ep.front}, {"direct", h.ep.server}} {
		took, err := requestOnce(via.ep, serveWithin)
		if err != nil {
			return fmt.Errorf("request %s (%s) next to a hostile peer: %v", via.name, via.ep, err)
		}
		h.record(via.name, took)
	}
	if err := h.publicationsFlow(); err != nil {
		return fmt.Errorf("publications next to a hostile peer: %v", err)
	}
	return nil
}

// requestOnce sends a login on a fresh connection with one attempt.
func requestOnce(ep string, within time.Duration) (time.Duration, error) {
	cfg := transport.DefaultClientConfig(ep)
	cfg.Timeout, cfg.Attempts, cfg.DialTimeout = within, 1, within
	cl, err := transport.NewClient(cfg, clustertest.Log())
	if err != nil {
		return 0, err
	}
	defer cl.Close()
	start := time.Now()
	env, err := callEnv(cl, proto.Login, proto.Data{"user": "probe"})
	took := time.Since(start)
	if err != nil {
		return took, err
	}
	if env.Data["status"] != proto.StatusSuccess {
		return took, fmt.Errorf("reply %v", env.Data)
	}
	if took > within {
		return took, fmt.Errorf("answered after %v", took)
	}
	return took, nil
}

func (h *servingChecker) publicationsFlow() error {
	h.mu.Lock()
	h.probes++
	probe := fmt.Sprintf("probe-%d", h.probes)
	h.mu.Unlock()
	rawTopic := "hostile-raw"
	start := time.Now()
	deadline := start.Add(serveWithin)

	ctx := context.Background()
	sub, err := transport.DialSocket(ctx, zmq4.NewSub, h.ep.pubOut, serveWithin)
	if err != nil {
		return err
	}
	defer sub.Close()
	for _, topic := range []string{hostileChannel, rawTopic} {
		if err := sub.SetOption(zmq4.OptionSubscribe, topic); err != nil {
			return err
		}
	}
	pub, err := transport.DialSocket(ctx, zmq4.NewPub, h.ep.pubIn, serveWithin)
	if err != nil {
		return err
	}
	defer pub.Close()

	got := make(chan string, 64)
	go func() {
		defer close(got)
		for {
			m, err := sub.Recv()
			if err != nil {
				return // closed
			}
			if len(m.Frames) != 2 {
				continue
			}
			r, err := proto.DecodePublication(m.Frames)
			if err != nil || r.Post == nil || r.Post.Text != probe {
				continue
			}
			select {
			case got <- r.Topic:
			default:
			}
		}
	}()
	rawPayload := proto.PostPublication(proto.Post{Channel: rawTopic, User: "raw", Text: probe, Timestamp: time.Now()})
	seen := map[string]time.Duration{}
	posted := make(chan error, 1) // the token of the one post in flight, with its outcome
	posted <- nil
	var postErr error
	tick := time.NewTicker(25 * time.Millisecond)
	defer tick.Stop()
	for len(seen) < 2 {
		if time.Now().After(deadline) {
			return fmt.Errorf("within %v the new subscriber got %v of the post via the broker (%s) and the publication of a new publisher on pub-in (%s); post error: %v",
				serveWithin, seen, hostileChannel, rawTopic, postErr)
		}
		select {
		case topic, ok := <-got:
			if !ok {
				return errors.New("subscriber closed")
			}
			if _, dup := seen[topic]; !dup {
				seen[topic] = time.Since(start)
			}
		case err := <-posted:
			if err != nil {
				postErr = err
			}
			// one post in flight at a time, through the broker
			go func() {
				env, err := callEnv(h.pub, proto.Publish, proto.Data{"user": "probe", "channel": hostileChannel, "message": probe})
				if err == nil && env.Data["status"] != proto.StatusOK {
					err = fmt.Errorf("publish reply %v", env.Data)
				}
				time.Sleep(25 * time.Millisecond)
				posted <- err
			}()
		case <-tick.C:
			_ = pub.Send(zmq4.NewMsgFrom(rawPayload.Frames()...))
		}
	}
	// wait for the in-flight post, so h.pub is free for the next check
	<-posted
	h.record("post", seen[hostileChannel])
	h.record("raw", seen[rawTopic])
	return nil
}

// waitForServing waits until a request through front succeeds, failing
// early when one of procs exits.
func waitForServing(t *testing.T, front string, timeout time.Duration, procs ...*chatProcess) {
	t.Helper()
	clustertest.WaitFor(t, timeout, "the processes to serve through the broker", func() bool {
		for _, p := range procs {
			if err := p.alive(); err != nil {
				t.Fatal(err)
			}
		}
		_, err := requestOnce(front, 2*time.Second)
		return err == nil
	})
}

// hostPort strips the scheme of an endpoint.
func hostPort(ep string) string {
	if i := strings.Index(ep, "://"); i >= 0 {
		return ep[i+3:]
	}
	return ep
}

// ---- real processes ----

// chatProcess is a `chat` subprocess whose exit is watched.
type chatProcess struct {
	name   string
	cmd    *exec.Cmd
	exited chan struct{}
	out    clustertest.Output // stderr: logs, and a panic's trace
}

// startChatProcess runs `chat role args...`; it is stopped when t ends.
func startChatProcess(t *testing.T, bin, role string, args ...string) *chatProcess {
	t.Helper()
	p := &chatProcess{name: role, cmd: exec.Command(bin, append([]string{role}, args...)...), exited: make(chan struct{})}
	p.cmd.Stderr = &p.out
	if os.Getenv("CHAT_TEST_LOG") != "" {
		p.cmd.Stderr = io.MultiWriter(&p.out, os.Stderr)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.cmd.Wait(); close(p.exited) }()
	t.Cleanup(func() {
		_ = p.cmd.Process.Signal(syscall.SIGCONT) // in case a test stopped it
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.exited:
		case <-time.After(5 * time.Second):
			_ = p.cmd.Process.Kill()
			<-p.exited
		}
		if t.Failed() {
			t.Logf("%s (pid %d) output:\n%s", p.name, p.cmd.Process.Pid, tail(p.out.String(), 4000))
		}
	})
	return p
}

func (p *chatProcess) pid() int { return p.cmd.Process.Pid }

// alive returns an error (with the end of its output) if p has exited.
func (p *chatProcess) alive() error {
	select {
	case <-p.exited:
		return fmt.Errorf("`chat %s` exited (%v); its output ends with:\n%s", p.name, p.cmd.ProcessState, tail(p.out.String(), 4000))
	default:
		return nil
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}
