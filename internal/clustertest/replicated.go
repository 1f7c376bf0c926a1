package clustertest

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"chat/replication"
	"chat/roles/broker"
	"chat/roles/reference"
	"chat/roles/server"
)

// Replicated is a whole cluster in the test process: a reference, a
// broker and servers that elect, sync clocks and replicate, with short
// timeouts. Servers can be stopped and started again on their own data.
type Replicated struct {
	t         testing.TB
	Reference *reference.Reference
	Broker    *broker.Broker
	Servers   []*server.Server // nil while stopped
	Configs   []server.Config  // each server's config (its Listen is fixed after the first start)
	refCfg    reference.Config
}

// FastCluster shortens the cluster's timeouts on cfg, for tests.
func FastCluster(cfg *server.Config) {
	c := &cfg.Cluster
	c.Election.AnswerTimeout = 150 * time.Millisecond
	c.Election.AnnounceTimeout = 500 * time.Millisecond
	c.Election.CoordinatorTimeout = 500 * time.Millisecond
	c.Election.AnnounceInterval = 200 * time.Millisecond
	c.PingInterval = 100 * time.Millisecond
	c.PeerTimeout = 300 * time.Millisecond
	c.ReferenceInterval = 200 * time.Millisecond
	c.ReferenceTimeout = 300 * time.Millisecond
	c.Replication.HeartbeatInterval = 50 * time.Millisecond
	c.Replication.CampaignTimeout = 500 * time.Millisecond
	c.CommitTimeout = 2 * time.Second
}

// StartReplicated starts a reference, a broker and n replicating servers
// named server-1..n, and returns once one coordinator leads them all.
// tune, when not nil, edits each server's config.
func StartReplicated(t testing.TB, n int, tune func(*server.Config)) *Replicated {
	t.Helper()
	return StartReplicatedKeyed(t, n, "", tune)
}

// StartReplicatedKeyed is StartReplicated with cluster key key for the
// reference, the broker and every server ("" : open).
func StartReplicatedKeyed(t testing.TB, n int, key string, tune func(*server.Config)) *Replicated {
	t.Helper()
	rc := reference.DefaultConfig()
	rc.Listen, rc.DataDir, rc.ServerTimeout = "tcp://127.0.0.1:0", t.TempDir(), time.Second
	rc.ClusterKey = key
	ref, err := reference.Start(context.Background(), rc, Log())
	if err != nil {
		t.Fatal(err)
	}
	bc := BrokerConfig()
	bc.ClusterKey = key
	b, err := broker.Start(context.Background(), bc, Log())
	if err != nil {
		ref.Close()
		t.Fatal(err)
	}
	rc.Listen = ref.Addr()
	c := &Replicated{t: t, Reference: ref, Broker: b, refCfg: rc}
	t.Cleanup(c.close)
	for i := range n {
		cfg := ServerConfig(t, fmt.Sprintf("server-%d", i+1), b)
		cfg.DataDir = filepath.Join(t.TempDir(), cfg.Name)
		cfg.Reference, cfg.BrokerSub = ref.Addr(), b.PubOutAddr()
		cfg.Cluster.Replicas = n
		cfg.ClusterKey = key
		FastCluster(&cfg)
		if tune != nil {
			tune(&cfg)
		}
		c.Configs = append(c.Configs, cfg)
		c.Servers = append(c.Servers, nil)
		c.Start(i)
	}
	WaitFor(t, 10*time.Second, "servers to join the broker", func() bool { return len(b.LiveServers()) == n })
	c.WaitLeader(10 * time.Second)
	return c
}

// Start starts server i (again) on its data directory and port.
func (c *Replicated) Start(i int) *server.Server {
	c.t.Helper()
	s, err := server.Start(context.Background(), c.Configs[i], Log())
	if err != nil {
		c.t.Fatal(err)
	}
	c.Configs[i].Listen = s.Addr() // the same port next time
	c.Servers[i] = s
	return s
}

// Stop stops server i cleanly.
func (c *Replicated) Stop(i int) {
	if c.Servers[i] != nil {
		c.Servers[i].Close()
		c.Servers[i] = nil
	}
}

// Leader returns the index of the server that leads replication and
// that every running server follows, or -1.
func (c *Replicated) Leader() int {
	leader := -1
	for i, s := range c.Servers {
		if s != nil && s.Node().Leading() {
			if leader >= 0 {
				return -1 // two think they lead
			}
			leader = i
		}
	}
	if leader < 0 {
		return -1
	}
	name := c.Configs[leader].Name
	for _, s := range c.Servers {
		if s == nil {
			continue
		}
		st := s.Node().Status()
		if st["coordinator"] != name || (st["role"] != replication.Follower.String() && st["role"] != replication.Leader.String()) {
			return -1
		}
	}
	return leader
}

// WaitLeader waits until one server leads and all follow it; it returns
// its index.
func (c *Replicated) WaitLeader(timeout time.Duration) int {
	c.t.Helper()
	leader := -1
	WaitFor(c.t, timeout, "one coordinator leading every server", func() bool {
		leader = c.Leader()
		return leader >= 0
	})
	return leader
}

// StopReference stops the reference.
func (c *Replicated) StopReference() {
	if c.Reference != nil {
		c.Reference.Close()
		c.Reference = nil
	}
}

// StartReference starts the reference again on its address and data.
func (c *Replicated) StartReference() *reference.Reference {
	c.t.Helper()
	ref, err := reference.Start(context.Background(), c.refCfg, Log())
	if err != nil {
		c.t.Fatal(err)
	}
	c.Reference = ref
	return ref
}

func (c *Replicated) close() {
	for i := range c.Servers {
		c.Stop(i)
	}
	c.Broker.Close()
	c.StopReference()
}
