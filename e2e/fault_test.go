package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/go-zeromq/zmq4"

	"chat/internal/clustertest"
	"chat/internal/testnet"
	"chat/proto"
	"chat/roles/broker"
	"chat/roles/server"
	"chat/transport"
)

// TestBrokerTakesOutADeadServer stops one of two servers: the broker takes
// it out within seconds and every request keeps getting an answer.
func TestBrokerTakesOutADeadServer(t *testing.T) {
	c := startCluster(t, 2)
	cl := newClient(t, c.Broker.FrontAddr())
	for range 4 {
		expectStatus(t, call(t, cl, proto.Login, proto.Data{"user": "u"}), proto.StatusSuccess)
	}
	c.Servers[1].Close()
	c.Servers[1] = nil
	clustertest.WaitFor(t, 5*time.Second, "the broker to take the server out", func() bool { return len(c.Broker.LiveServers()) == 1 })
	for range 10 {
		expectStatus(t, call(t, cl, proto.Login, proto.Data{"user": "u"}), proto.StatusSuccess)
	}
}

// TestRequestHeldByDeadServerGetsAnError freezes a server's back end (it
// heartbeats no more and answers nothing): a request it holds is answered
// by the broker with a retryable erro, not left hanging.
func TestRequestHeldByDeadServerGetsAnError(t *testing.T) {
	b, err := broker.Start(context.Background(), clustertest.BrokerConfig(), clustertest.Log())
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	// A fake server: it joins, then takes requests and never answers.
	fake := startSilentServer(t, b.BackAddr())
	clustertest.WaitFor(t, 5*time.Second, "the fake server to join", func() bool { return len(b.LiveServers()) == 1 })
	cfg := transport.DefaultClientConfig(b.FrontAddr())
	cfg.Timeout, cfg.Attempts = 10*time.Second, 1
	cl, err := transport.NewClient(cfg, clustertest.Log())
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	type result struct {
		env proto.Envelope
		err error
	}
	done := make(chan result, 1)
	go func() {
		env, err := callEnv(cl, proto.Login, proto.Data{"user": "u"})
		done <- result{env, err}
	}()
	<-fake.got // the fake server holds the request now
	fake.stopHeartbeats()
	r := <-done
	if r.err != nil {
		t.Fatalf("no reply: %v", r.err)
	}
	desc, _ := r.env.Data["description"].(string)
	if r.env.Data["status"] != proto.StatusError || r.env.Data["retry"] != true || !strings.Contains(desc, "did not answer") {
		t.Fatalf("reply %v, want a retryable erro saying the server did not answer", r.env.Data)
	}
}

// TestServersAndClientsSurviveABrokerRestart restarts the broker on the
// same ports: the server reconnects by itself and a client gets answers
// again.
func TestServersAndClientsSurviveABrokerRestart(t *testing.T) {
	cfg := clustertest.BrokerConfig()
	cfg.Front, cfg.Back, cfg.PubIn, cfg.PubOut = testnet.FreeEndpoint(t), testnet.FreeEndpoint(t), testnet.FreeEndpoint(t), testnet.FreeEndpoint(t)
	b, err := broker.Start(context.Background(), cfg, clustertest.Log())
	if err != nil {
		t.Fatal(err)
	}
	s, err := server.Start(context.Background(), clustertest.ServerConfig(t, "s1", b), clustertest.Log())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	clustertest.WaitFor(t, 5*time.Second, "the server to join", func() bool { return len(b.LiveServers()) == 1 })
	cl := newClient(t, cfg.Front)
	expectStatus(t, call(t, cl, proto.Login, proto.Data{"user": "u"}), proto.StatusSuccess)

	b.Close()
	b, err = broker.Start(context.Background(), cfg, clustertest.Log())
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	clustertest.WaitFor(t, 10*time.Second, "the server to rejoin the new broker", func() bool { return len(b.LiveServers()) == 1 })
	clustertest.WaitFor(t, 10*time.Second, "a client request to succeed again", func() bool {
		env, err := callEnv(cl, proto.Login, proto.Data{"user": "u"})
		return err == nil && env.Data["status"] == proto.StatusSuccess
	})
}

// TestKill9LosesNothingAcknowledged runs a real server process, publishes
// from 16 clients, kills the process with SIGKILL in the middle, restarts
// it and checks that every acknowledged message is in the history.
func TestKill9LosesNothingAcknowledged(t *testing.T) {
	bin := buildChat(t)
	data := t.TempDir()
	listen := testnet.FreeEndpoint(t)
	start := func() *exec.Cmd {
		cmd := exec.Command(bin, "server", "--name", "durable", "--listen", listen, "--data", data,
			"--broker-back", "", "--broker-pub", "", "--reference", "")
		cmd.Stderr = os.Stderr
		if os.Getenv("CHAT_TEST_LOG") == "" {
			cmd.Stderr = nil
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		return cmd
	}
	proc := start()
	defer func() { proc.Process.Kill(); proc.Wait() }()
	setup := newClient(t, listen)
	clustertest.WaitFor(t, 10*time.Second, "the server process to answer", func() bool {
		_, err := callEnv(setup, proto.Channel, proto.Data{"channel": "load"})
		return err == nil
	})

	var mu sync.Mutex
	acked := map[string]bool{}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for w := range 16 {
		wg.Go(func() {
			cl := newClient(t, listen)
			for i := 0; ctx.Err() == nil; i++ {
				text := fmt.Sprintf("w%d-m%d", w, i)
				env, err := callEnv(cl, proto.Publish, proto.Data{"user": "u", "channel": "load", "message": text})
				if err != nil {
					return // the server is gone
				}
				if env.Data["status"] == proto.StatusOK {
					mu.Lock()
					acked[text] = true
					mu.Unlock()
				}
			}
		})
	}
	clustertest.WaitFor(t, 20*time.Second, "500 acknowledged publishes", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(acked) >= 500
	})
	proc.Process.Signal(syscall.SIGKILL)
	proc.Wait()
	cancel()
	wg.Wait()

	proc = start()
	cl := newClient(t, listen)
	stored := map[string]bool{}
	before := int64(0)
	clustertest.WaitFor(t, 10*time.Second, "the restarted server to answer", func() bool {
		_, err := callEnv(cl, proto.Users, nil)
		return err == nil
	})
	for {
		d := call(t, cl, proto.History, proto.Data{"channel": "load", "limit": 500, "before": before})
		page := messages(t, d)
		if len(page) == 0 {
			break
		}
		for _, m := range page {
			stored[fmt.Sprint(m["message"])] = true
		}
		before, _, _ = proto.Data(page[0]).Int("", "id")
	}
	mu.Lock()
	defer mu.Unlock()
	var lost []string
	for text := range acked {
		if !stored[text] {
			lost = append(lost, text)
		}
	}
	if len(lost) > 0 {
		t.Fatalf("%d of %d acknowledged messages lost after kill -9, e.g. %v", len(lost), len(acked), lost[:min(5, len(lost))])
	}
	t.Logf("%d acknowledged before SIGKILL, all in the history after restart (%d stored)", len(acked), len(stored))
}

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// buildChat builds the chat binary once per test run.
func buildChat(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "chat-bin")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "chat")
		out, err := exec.Command("go", "build", "-o", binPath, "..").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// silentServer joins a broker as a server would, then never answers.
type silentServer struct {
	stop chan struct{}
	once sync.Once
	got  chan struct{} // one value per request received
}

func startSilentServer(t *testing.T, back string) *silentServer {
	t.Helper()
	sock, err := transport.DialSocket(t.Context(), zmq4.NewDealer, back, time.Second, zmq4.WithID(zmq4.SocketIdentity("silent")))
	if err != nil {
		t.Fatal(err)
	}
	f := &silentServer{stop: make(chan struct{}), got: make(chan struct{}, 100)}
	var wg sync.WaitGroup
	t.Cleanup(func() { f.stopHeartbeats(); sock.Close(); wg.Wait() })
	hb := proto.Envelope{Service: "heartbeat", Data: proto.Data{"user": "silent"}}.Encode()
	wg.Go(func() {
		for {
			m, err := sock.Recv()
			if err != nil {
				return
			}
			if len(m.Frames) > 1 {
				f.got <- struct{}{}
			}
		}
	})
	wg.Go(func() {
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			sock.Send(zmq4.NewMsg(hb))
			select {
			case <-f.stop:
				return
			case <-tick.C:
			}
		}
	})
	return f
}

func (f *silentServer) stopHeartbeats() { f.once.Do(func() { close(f.stop) }) }
