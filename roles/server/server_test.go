package server

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"chat/internal/zmtptest"
	"chat/proto"
	"chat/transport"
)

func startAlone(t *testing.T, tune func(*Config)) *Server {
	t.Helper()
	cfg := DefaultConfig("alone")
	cfg.Listen, cfg.DataDir = "tcp://127.0.0.1:0", t.TempDir()
	cfg.BrokerBack, cfg.BrokerPub, cfg.Reference = "", "", ""
	if tune != nil {
		tune(&cfg)
	}
	s, err := Start(context.Background(), cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func hostPort(ep string) string {
	_, hp, _ := strings.Cut(ep, "://")
	return hp
}

// Issue 9: a client that pipelines requests without waiting has at most
// MaxQueuedPerClient of them queued or being served; the rest are
// answered at once with an erro, and nothing else of it waits. (Before:
// no bound, every request queued and served.)
func TestQueuedRequestsPerClientAreBounded(t *testing.T) {
	s := startAlone(t, func(c *Config) {
		c.Workers = 2
		c.RateLimit.Rate = 0 // the queue bound on its own
	})
	cl, err := transport.NewClient(transport.DefaultClientConfig(s.Addr()), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ch, _ := msgpack.Marshal(map[string]any{"service": "channel", "data": map[string]any{"channel": "q"}})
	if _, err := cl.Do(context.Background(), ch); err != nil {
		t.Fatal(err)
	}

	const n = 400
	body, _ := msgpack.Marshal(map[string]any{"service": "history", "data": map[string]any{"channel": "q"}})
	one := append(zmtptest.Frame(nil, false, true), zmtptest.Frame(body, false, false)...)
	var burst []byte
	for range n {
		burst = append(burst, one...)
	}
	p := zmtptest.Dial(t, hostPort(s.Addr()))
	p.Handshake(t, 1, "DEALER")
	p.Write(t, burst)
	p.Conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	served, refused := 0, 0
	var why string
	for range n {
		frames, err := p.ReadMessage()
		if err != nil {
			t.Fatalf("after %d served and %d refused: %v", served, refused, err)
		}
		env, err := proto.Decode(frames[len(frames)-1])
		if err != nil {
			t.Fatal(err)
		}
		if env.Data["status"] == proto.StatusOK {
			served++
			continue
		}
		refused++
		why, _ = env.Data["description"].(string)
	}
	t.Logf("%d pipelined requests: %d served, %d refused (%q)", n, served, refused, why)
	if refused == 0 || !strings.Contains(why, "too many requests") {
		t.Fatalf("%d pipelined requests all served: no bound on the work queued per client", n)
	}
}
