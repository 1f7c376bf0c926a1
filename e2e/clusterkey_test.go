package e2e

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-zeromq/zmq4"

	"chat/internal/clustertest"
	"chat/proto"
	"chat/roles/server"
	"chat/roles/status"
	"chat/transport"
)

const e2eClusterKey = "e2e-cluster-key-0123456789abcdef"

// Issue 11: a cluster with a key works end to end (registration, the
// election, replication, failover, publications to standard
// subscribers, chat status with the key), and a server without the key
// joins nothing: the reference does not register it, the broker does not
// route to it.
func TestKeyedClusterEndToEnd(t *testing.T) {
	c := clustertest.StartReplicatedKeyed(t, 3, e2eClusterKey, nil)

	sub, err := transport.DialSocket(t.Context(), zmq4.NewSub, c.Broker.PubOutAddr(), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	sub.SetOption(zmq4.OptionSubscribe, "lab")
	got := make(chan [][]byte, 100)
	go func() {
		for {
			m, err := sub.Recv()
			if err != nil {
				return
			}
			got <- m.Frames
		}
	}()

	b := newClient(t, c.Broker.FrontAddr())
	wantStatus(t, callOK(t, b, proto.Login, proto.Data{"user": "ana"}), proto.StatusSuccess)
	wantStatus(t, callOK(t, b, proto.Channel, proto.Data{"channel": "lab"}), proto.StatusSuccess)
	received := false
	for i := 0; !received; i++ {
		if i == 50 {
			t.Fatal("no publication of a keyed cluster reached a subscriber")
		}
		wantStatus(t, callOK(t, b, proto.Publish, proto.Data{"user": "ana", "channel": "lab", "message": fmt.Sprint("post ", i)}), proto.StatusOK)
		select {
		case f := <-got:
			if len(f) != 2 || string(f[0]) != "lab" {
				t.Fatalf("a subscriber got %q, want the standard's [topic][payload]", f)
			}
			received = true
		case <-time.After(200 * time.Millisecond):
		}
	}

	// A failover: the election and replication run with the key.
	leader := c.WaitLeader(5 * time.Second)
	c.Stop(leader)
	c.WaitLeader(10 * time.Second)
	wantStatus(t, callOK(t, b, proto.Publish, proto.Data{"user": "ana", "channel": "lab", "message": "after the failover"}), proto.StatusOK)

	// chat status needs the key.
	cfg := status.DefaultConfig()
	cfg.Reference, cfg.ClusterKey = c.Reference.Addr(), e2eClusterKey
	rep, err := status.Snapshot(context.Background(), cfg)
	if err != nil {
		t.Fatalf("chat status with the key: %v", err)
	}
	ours := 0
	for _, s := range rep.Servers {
		if s.Ours {
			ours++
		}
	}
	if ours != 2 {
		t.Fatalf("chat status with the key: %d servers answered, want the 2 running: %+v", ours, rep.Servers)
	}
	cfg.ClusterKey = ""
	if _, err := status.Snapshot(context.Background(), cfg); err == nil || !strings.Contains(err.Error(), "requires its key") {
		t.Fatalf("chat status without the key: err %v, want the reference's refusal", err)
	}

	// A server without the key.
	var logs clustertest.Output
	scfg := clustertest.ServerConfig(t, "intruder", c.Broker)
	scfg.DataDir = filepath.Join(t.TempDir(), "intruder")
	scfg.Reference, scfg.BrokerSub = c.Reference.Addr(), c.Broker.PubOutAddr()
	clustertest.FastCluster(&scfg)
	intruder, err := server.Start(context.Background(), scfg, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer intruder.Close()
	clustertest.WaitFor(t, 10*time.Second, "the reference to refuse the keyless server", func() bool {
		return strings.Contains(logs.String(), "requires its key")
	})
	// The broker never answers its heartbeats, so its link gives up after
	// BrokerTimeout: five heartbeats, any of which would have made a
	// server live.
	clustertest.WaitFor(t, 10*time.Second, "the keyless server to find the broker silent", func() bool {
		return strings.Contains(logs.String(), "broker link down")
	})
	for _, id := range c.Broker.LiveServers() {
		if strings.HasPrefix(id, "intruder") {
			t.Fatalf("the broker routes to the keyless server: %v", c.Broker.LiveServers())
		}
	}
	for _, s := range c.Reference.Known() {
		if s.Name == "intruder" {
			t.Fatal("the reference registered the keyless server")
		}
	}
}
