// Package clustertest starts whole topologies inside a test process: a
// broker and servers on 127.0.0.1:0 ports, with short timeouts, stopped
// when the test ends. The end-to-end tests and the client and bot tests
// share it.
package clustertest

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"testing"
	"time"

	"chat/internal/poll"
	"chat/logging"
	"chat/roles/broker"
	"chat/roles/server"
)

// Log returns a logger that writes to stderr when CHAT_TEST_LOG is set,
// and nowhere otherwise.
func Log() *slog.Logger {
	if os.Getenv("CHAT_TEST_LOG") != "" {
		return logging.New(os.Stderr, logging.Options{Level: slog.LevelDebug})
	}
	return slog.New(slog.DiscardHandler)
}

// LocalBrokerConfig is the default broker config on kernel-chosen ports of
// 127.0.0.1 (benchmarks keep the default timeouts).
func LocalBrokerConfig() broker.Config {
	cfg := broker.DefaultConfig()
	cfg.Front, cfg.Back, cfg.PubIn, cfg.PubOut = "tcp://127.0.0.1:0", "tcp://127.0.0.1:0", "tcp://127.0.0.1:0", "tcp://127.0.0.1:0"
	return cfg
}

// BrokerConfig is LocalBrokerConfig with short timeouts, for tests.
func BrokerConfig() broker.Config {
	cfg := LocalBrokerConfig()
	cfg.HeartbeatInterval = 100 * time.Millisecond
	cfg.ServerTimeout = 500 * time.Millisecond
	cfg.RequestTimeout = 2 * time.Second
	return cfg
}

// ServerConfig is a server config with its own data directory and short
// timeouts, connected to b (alone when b is nil).
func ServerConfig(t testing.TB, name string, b *broker.Broker) server.Config {
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

// Cluster is a broker and servers running in the test process.
type Cluster struct {
	Broker  *broker.Broker
	Servers []*server.Server // an entry is nil once the test stopped it
}

// Start starts a broker and n servers connected to it, with the configs
// above, and returns once the broker routes requests to all of them.
// Everything stops when the test ends.
func Start(t testing.TB, n int) *Cluster {
	t.Helper()
	return StartWith(t, n, BrokerConfig(), nil)
}

// StartWith is Start with the broker's config given and, when tune is not
// nil, each server's config edited by it.
func StartWith(t testing.TB, n int, cfg broker.Config, tune func(*server.Config)) *Cluster {
	t.Helper()
	b, err := broker.Start(context.Background(), cfg, Log())
	if err != nil {
		t.Fatal(err)
	}
	c := &Cluster{Broker: b}
	t.Cleanup(c.close)
	for i := range n {
		scfg := ServerConfig(t, fmt.Sprintf("server-%d", i+1), b)
		if tune != nil {
			tune(&scfg)
		}
		s, err := server.Start(context.Background(), scfg, Log())
		if err != nil {
			t.Fatal(err)
		}
		c.Servers = append(c.Servers, s)
	}
	WaitFor(t, 10*time.Second, "servers to join the broker", func() bool { return len(b.LiveServers()) == n })
	return c
}

func (c *Cluster) close() {
	for _, s := range c.Servers {
		if s != nil {
			s.Close()
		}
	}
	c.Broker.Close()
}

// WaitFor polls cond until it holds, or fails the test after timeout.
func WaitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	poll.WaitFor(t, timeout, what, cond)
}

// Output collects what several goroutines write, safe to read meanwhile.
type Output = poll.Output
