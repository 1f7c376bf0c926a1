package e2e

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"chat/logging"
	"chat/proto"
	"chat/roles/broker"
	"chat/roles/server"
	"chat/transport"
)

// testLogger logs to stderr when CHAT_TEST_LOG is set, else nowhere.
func testLogger() *slog.Logger {
	if os.Getenv("CHAT_TEST_LOG") != "" {
		return logging.New(os.Stderr, logging.Options{Level: slog.LevelDebug})
	}
	return slog.New(slog.DiscardHandler)
}

// cluster is a broker and servers running in the test process.
type cluster struct {
	t       testing.TB
	broker  *broker.Broker
	servers []*server.Server
}

// fastBroker is a broker config on random local ports with short timeouts.
func fastBroker() broker.Config {
	cfg := broker.DefaultConfig()
	cfg.Front, cfg.Back, cfg.PubIn, cfg.PubOut = "tcp://127.0.0.1:0", "tcp://127.0.0.1:0", "tcp://127.0.0.1:0", "tcp://127.0.0.1:0"
	cfg.HeartbeatInterval = 100 * time.Millisecond
	cfg.ServerTimeout = 500 * time.Millisecond
	cfg.RequestTimeout = 2 * time.Second
	return cfg
}

// serverConfig is a server config with its own data dir and short timeouts.
func serverConfig(t testing.TB, name string, b *broker.Broker) server.Config {
	cfg := server.DefaultConfig(name)
	cfg.Listen = "tcp://127.0.0.1:0"
	cfg.DataDir = t.TempDir()
	cfg.BrokerBack, cfg.BrokerPub = "", ""
	if b != nil {
		cfg.BrokerBack, cfg.BrokerPub = b.BackAddr(), b.PubInAddr()
	}
	cfg.HeartbeatInterval = 100 * time.Millisecond
	cfg.BrokerTimeout = 500 * time.Millisecond
	return cfg
}

// startCluster starts a broker and n servers connected to it, and waits
// until the broker routes to all of them.
func startCluster(t testing.TB, n int) *cluster {
	t.Helper()
	b, err := broker.Start(context.Background(), fastBroker(), testLogger())
	if err != nil {
		t.Fatal(err)
	}
	c := &cluster{t: t, broker: b}
	t.Cleanup(c.close)
	for i := range n {
		s, err := server.Start(context.Background(), serverConfig(t, fmt.Sprintf("server-%d", i+1), b), testLogger())
		if err != nil {
			t.Fatal(err)
		}
		c.servers = append(c.servers, s)
	}
	waitFor(t, 5*time.Second, "servers to join the broker", func() bool { return len(b.LiveServers()) == n })
	return c
}

func (c *cluster) close() {
	for _, s := range c.servers {
		if s != nil {
			s.Close()
		}
	}
	if c.broker != nil {
		c.broker.Close()
	}
}

// newClient returns a request client for the endpoints with short timeouts.
func newClient(t testing.TB, endpoints ...string) *transport.Client {
	t.Helper()
	cfg := transport.DefaultClientConfig(endpoints...)
	cfg.Timeout = time.Second
	c, err := transport.NewClient(cfg, testLogger())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

var clockOfTests atomic.Uint64

// call sends one request and returns the reply's data. It fails the test
// only when no reply comes at all.
func call(t testing.TB, c *transport.Client, service string, data proto.Data) proto.Data {
	t.Helper()
	env, err := callEnv(c, service, data)
	if err != nil {
		t.Fatalf("%s: %v", service, err)
	}
	if env.Service != service {
		t.Fatalf("%s: reply is for service %q", service, env.Service)
	}
	return env.Data
}

func callEnv(c *transport.Client, service string, data proto.Data) (proto.Envelope, error) {
	if data == nil {
		data = proto.Data{}
	}
	env := proto.Envelope{Service: service, Data: data}.Stamp(time.Now(), clockOfTests.Add(1))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	reply, err := c.Do(ctx, env.Encode())
	if err != nil {
		return proto.Envelope{}, err
	}
	return proto.Decode(reply)
}

// waitFor polls cond until it holds or the timeout passes.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
