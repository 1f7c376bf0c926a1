package e2e

// A peer that vanishes without FIN (issue 3) is noticed within seconds:
// a SIGSTOPped `chat server` process is taken out of the broker's rotation
// (application heartbeats), and a raw peer that completes the handshake and
// then goes silent is closed by the guard within HeartbeatTimeout (ZMTP
// PING). zmq4 alone notices neither for minutes.

import (
	"bytes"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"chat/internal/clustertest"
	"chat/internal/testnet"
	"chat/internal/zmtptest"
	"chat/proto"
	"chat/transport"
)

// TestVanishedServerProcessIsTakenOut runs `chat broker` and two `chat
// server` processes, SIGSTOPs one server (its TCP connections stay open,
// the kernel still ACKs: only heartbeats can tell) and checks through the
// broker's front that every request is still answered within seconds, that
// the stopped server is taken out within the server timeout (+ slack), and
// that after that every request succeeds. SIGCONT brings it back.
func TestVanishedServerProcessIsTakenOut(t *testing.T) {
	const (
		heartbeat     = 250 * time.Millisecond
		serverTimeout = 1500 * time.Millisecond
		slack         = 2500 * time.Millisecond // scheduling on a loaded machine
	)
	bin := buildChat(t)
	front, back, pubIn, pubOut := testnet.FreeEndpoint(t), testnet.FreeEndpoint(t), testnet.FreeEndpoint(t), testnet.FreeEndpoint(t)
	b := startChatProcess(t, bin, "broker", "--front", front, "--back", back, "--pub-in", pubIn, "--pub-out", pubOut,
		"--heartbeat-interval", heartbeat.String(), "--server-timeout", serverTimeout.String(), "--request-timeout", "30s")
	servers := map[string]*chatProcess{}
	for _, name := range []string{"vanish-a", "vanish-b"} {
		servers[name] = startChatProcess(t, bin, "server", "--name", name, "--listen", testnet.FreeEndpoint(t), "--data", t.TempDir(),
			"--broker-back", back, "--broker-pub", pubIn, "--reference", "",
			"--heartbeat-interval", heartbeat.String(), "--broker-timeout", serverTimeout.String())
	}
	// A server is in the rotation again after a "joined" (its heartbeat)
	// or a "back" (a reply: after SIGCONT, the one to the request it held).
	joined := func(name string) int {
		return countLogLines(b.out.String(), "server joined", "server="+name+"-") + countLogLines(b.out.String(), "server back", "server="+name+"-")
	}
	clustertest.WaitFor(t, 15*time.Second, "both servers to join the broker", func() bool {
		for _, p := range append([]*chatProcess{b}, servers["vanish-a"], servers["vanish-b"]) {
			if err := p.alive(); err != nil {
				t.Fatal(err)
			}
		}
		return joined("vanish-a") > 0 && joined("vanish-b") > 0
	})

	cfg := transport.DefaultClientConfig(front)
	cfg.Timeout, cfg.Attempts = 30*time.Second, 1 // see the broker's own answer, however late
	cl, err := transport.NewClient(cfg, clustertest.Log())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close() })
	for range 4 {
		if r := timedRead(cl); r.err != nil || r.status == proto.StatusError {
			t.Fatalf("before the stop: %s", r)
		}
	}

	stopped := servers["vanish-b"]
	continued := false
	cont := func() {
		if !continued {
			continued = true
			_ = stopped.cmd.Process.Signal(syscall.SIGCONT)
		}
	}
	t.Cleanup(cont)

	ok := t.Run("SIGSTOP_taken_out", func(t *testing.T) {
		if err := stopped.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
			t.Fatal(err)
		}
		stoppedAt := time.Now()
		// Requests until 20 in a row succeed, each within a second.
		var results []readResult
		var failed []readResult // answered, but not with success (held by the stopped server)
		var detected time.Duration
		streak := 0
		for streak < 20 {
			if time.Since(stoppedAt) > 20*time.Second {
				t.Fatalf("no 20 successes in a row 20s after SIGSTOP; requests: %v", results)
			}
			r := timedRead(cl)
			results = append(results, r)
			if r.err != nil {
				t.Fatalf("request %d after SIGSTOP not answered: %s", len(results), r)
			}
			if r.took > serverTimeout+slack {
				t.Fatalf("request %d after SIGSTOP answered after %v (server timeout %v): %s", len(results), r.took, serverTimeout, r)
			}
			if r.status == proto.StatusError {
				if r.retry != true || !strings.Contains(r.desc, "did not answer") {
					t.Fatalf("request %d after SIGSTOP: %s, want success or the broker's retryable 'did not answer' erro", len(results), r)
				}
				failed = append(failed, r)
				detected = time.Since(stoppedAt)
				streak = 0
				continue
			}
			if r.took > serveWithin {
				t.Fatalf("request %d after SIGSTOP took %v: %s", len(results), r.took, r)
			}
			streak++
		}
		// With two live servers in round robin, one of the first two
		// requests went to the stopped server: the broker held it until it
		// noticed.
		if len(failed) == 0 {
			t.Fatalf("no request was ever routed to the stopped server (was it in the rotation?); requests: %v", results)
		}
		if detected > serverTimeout+slack {
			t.Fatalf("the stopped server was taken out %v after SIGSTOP, server timeout %v", detected, serverTimeout)
		}
		if n := countLogLines(b.out.String(), "taken out", "server=vanish-b-"); n == 0 {
			t.Fatal("the broker did not log taking the stopped server out")
		}
		t.Logf("stopped server taken out %v after SIGSTOP (server timeout %v, heartbeat %v); %d requests after SIGSTOP, %d answered with the retryable erro, then %d in a row succeeded",
			detected.Round(time.Millisecond), serverTimeout, heartbeat, len(results), len(failed), streak)
	})
	if !ok {
		return
	}

	// SIGCONT: the server comes back into the rotation and, both servers
	// being up, every request succeeds again. (The resumed server finds the
	// broker "silent" for longer than its timeout, since it was stopped,
	// and reconnects under a new identity: the identity it abandons must
	// not be routed to.)
	t.Run("SIGCONT_no_request_lost", func(t *testing.T) {
		before := joined("vanish-b")
		cont()
		clustertest.WaitFor(t, 10*time.Second, "the resumed server to rejoin the broker", func() bool { return joined("vanish-b") > before })
		for i := range 10 {
			if r := timedRead(cl); r.err != nil || r.status == proto.StatusError || r.took > serveWithin {
				t.Fatalf("request %d after SIGCONT: %s; the broker logged:\n%s", i, r, grepLines(b.out.String(), "vanish-b"))
			}
		}
		for name, p := range servers {
			if err := p.alive(); err != nil {
				t.Fatalf("%s: %v", name, err)
			}
		}
	})
}

// grepLines returns the lines of log that contain s.
func grepLines(log, s string) string {
	var out strings.Builder
	for line := range strings.Lines(log) {
		if strings.Contains(line, s) {
			out.WriteString(line)
		}
	}
	return out.String()
}

type readResult struct {
	took         time.Duration
	err          error
	status, desc string
	retry        any
}

func (r readResult) String() string {
	if r.err != nil {
		return fmt.Sprintf("{%v: %v}", r.took.Round(time.Millisecond), r.err)
	}
	return fmt.Sprintf("{%v: %s %q retry=%v}", r.took.Round(time.Millisecond), r.status, r.desc, r.retry)
}

// timedRead sends a read (users) through the broker and times it. A read,
// not a write: the broker spreads reads round robin over every live
// server, while writes go to the one that says it leads (here two
// servers alone each say so, and only one would be asked).
func timedRead(cl *transport.Client) readResult {
	start := time.Now()
	env, err := callEnv(cl, proto.Users, proto.Data{})
	r := readResult{took: time.Since(start), err: err}
	if err == nil {
		r.status, _ = env.Data["status"].(string)
		r.desc, _ = env.Data["description"].(string)
		r.retry = env.Data["retry"]
	}
	return r
}

// countLogLines counts the log lines that contain every one of parts.
func countLogLines(log string, parts ...string) int {
	n := 0
	for line := range strings.Lines(log) {
		all := true
		for _, p := range parts {
			all = all && strings.Contains(line, p)
		}
		if all {
			n++
		}
	}
	return n
}

// TestVanishedPeerClosedByGuard connects a raw peer to the broker's back
// socket that completes the handshake (ZMTP 3.1, so it is PINGed) and then
// neither sends nor reads, as a SIGSTOPped or unplugged host would: the
// guard PINGs it and closes the connection within HeartbeatTimeout, while
// the real server's idle connections (which answer PING) stay up.
func TestVanishedPeerClosedByGuard(t *testing.T) {
	cfg := setGuardConfigForTest(t, func(c *transport.GuardConfig) {
		c.HeartbeatIvl = 250 * time.Millisecond
		c.HeartbeatTimeout = 1500 * time.Millisecond
	})
	c := startTolerantCluster(t, 1)
	before := transport.Stats()

	p := zmtptest.Dial(t, hostPort(c.Broker.BackAddr()))
	p.Handshake(t, 1, "DEALER")
	start := time.Now()
	// It joins as a server would (one heartbeat envelope), then goes silent.
	hb := proto.Envelope{Service: "heartbeat", Data: proto.Data{"user": "ghost"}}.Encode()
	p.Write(t, zmtptest.Frame(hb, false, false))

	_ = p.Conn.SetReadDeadline(time.Now().Add(cfg.HeartbeatTimeout + 3*time.Second))
	pinged := false
	var closedAfter time.Duration
	for {
		f, err := p.ReadFrame()
		if err != nil {
			closedAfter = time.Since(start)
			if ne, ok := err.(interface{ Timeout() bool }); ok && ne.Timeout() {
				t.Fatalf("the silent peer was still connected %v after it went silent (HeartbeatTimeout %v)", closedAfter, cfg.HeartbeatTimeout)
			}
			break
		}
		if f.Cmd && bytes.HasPrefix(f.Body, []byte("\x04PING")) {
			pinged = true
		}
	}
	if !pinged {
		t.Error("the guard closed the silent peer without PINGing it first")
	}
	if closedAfter > cfg.HeartbeatTimeout+time.Second {
		t.Fatalf("silent peer closed after %v, HeartbeatTimeout %v", closedAfter, cfg.HeartbeatTimeout)
	}
	clustertest.WaitFor(t, 2*time.Second, "the heartbeat timeout to be counted", func() bool {
		return transport.Stats().HeartbeatTimeouts > before.HeartbeatTimeouts
	})
	after := transport.Stats()
	t.Logf("silent peer PINGed and closed %v after it went silent (HeartbeatTimeout %v); heartbeat timeouts +%d, PINGs sent +%d, PONGs received +%d",
		closedAfter.Round(time.Millisecond), cfg.HeartbeatTimeout, after.HeartbeatTimeouts-before.HeartbeatTimeouts,
		after.PingsSent-before.PingsSent, after.PongsReceived-before.PongsReceived)

	// The real server, idle on the same socket and as long, is still
	// connected and routed to.
	if live := c.Broker.LiveServers(); !containsPrefix(live, "server-1") {
		t.Fatalf("live servers %v: the healthy server was dropped", live)
	}
	cl := newClient(t, c.Broker.FrontAddr())
	expectStatus(t, call(t, cl, proto.Login, proto.Data{"user": "u"}), proto.StatusSuccess)
}

func containsPrefix(list []string, prefix string) bool {
	for _, s := range list {
		if strings.HasPrefix(s, prefix) {
			return true
		}
	}
	return false
}
