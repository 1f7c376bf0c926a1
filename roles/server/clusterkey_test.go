package server

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"chat/cluster"
	"chat/clusterauth"
	"chat/internal/poll"
	"chat/proto"
	"chat/replication"
	"chat/transport"
)

const testKey = "server-test-cluster-key-0123456789"

// Issue 11: with a cluster key, a server answers its cluster services
// only to members. A plain `election` or `append` (from anyone, even
// under a peer's identity) is refused with "this cluster requires its
// key" and logged; wrapped with the key, the same services are answered,
// authenticated; a client's requests are served as before.
func TestKeyedServerRefusesUnauthenticatedClusterRequests(t *testing.T) {
	logs := &poll.Output{}
	cfg := DefaultConfig("keyed")
	cfg.Listen, cfg.DataDir = "tcp://127.0.0.1:0", t.TempDir()
	cfg.BrokerBack, cfg.BrokerPub, cfg.Reference = "", "", ""
	cfg.ClusterKey = testKey
	s, err := Start(context.Background(), cfg, slog.New(slog.NewTextHandler(logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if strings.Contains(logs.String(), clusterauth.OpenWarning) {
		t.Fatal("a keyed server said the cluster runs open")
	}

	do := func(identity string, frame []byte) []byte {
		t.Helper()
		pc := transport.DefaultPeerConfig(s.Addr())
		pc.Identity = identity
		p, err := transport.NewPeer(pc, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer p.Close()
		reply, err := p.Do(t.Context(), frame)
		if err != nil {
			t.Fatal(err)
		}
		return reply
	}
	stamp := func(service string, d proto.Data) []byte {
		return proto.Envelope{Service: service, Data: d}.Stamp(time.Now(), 1).Encode()
	}
	election := stamp(cluster.ServiceElection, proto.Data{"user": "forger", "rank": 99})
	appendReq := stamp(replication.ServiceAppend, proto.Data{"leader": "forger", "epoch": 99})
	for _, identity := range []string{"", cluster.PeerIdentity + "forger"} {
		for _, frame := range [][]byte{election, appendReq} {
			env, err := proto.Decode(do(identity, frame))
			if err != nil || env.Data["status"] != proto.StatusError || !strings.Contains(env.Data["description"].(string), clusterauth.RequiredText) {
				t.Fatalf("plain %s (identity %q): got %v, %v; want an erro %q", proto.PeekService(frame), identity, env, err, clusterauth.RequiredText)
			}
		}
	}
	if !strings.Contains(logs.String(), "refused a cluster request: it does not prove the cluster key") {
		t.Fatalf("the refusals were not logged:\n%s", logs)
	}

	member, _ := clusterauth.New(testKey, clusterauth.Config{})
	reply, err := member.Exchange(t.Context(), func(_ context.Context, f []byte) ([]byte, error) { return do("", f), nil }, election)
	if err != nil {
		t.Fatal(err)
	}
	if env, _ := proto.Decode(reply); env.Data["election"] != "OK" {
		t.Fatalf("authenticated election: got %v, want OK", env)
	}
	if env, _ := proto.Decode(do("", stamp(proto.Login, proto.Data{"user": "ana"}))); env.Data["status"] != proto.StatusSuccess {
		t.Fatalf("a client's login on a keyed server: got %v", env)
	}
}

// Without a key the server says, once, that the cluster runs open.
func TestOpenServerSaysSo(t *testing.T) {
	logs := &poll.Output{}
	cfg := DefaultConfig("open")
	cfg.Listen, cfg.DataDir = "tcp://127.0.0.1:0", t.TempDir()
	cfg.BrokerBack, cfg.BrokerPub, cfg.Reference = "", "", ""
	s, err := Start(context.Background(), cfg, slog.New(slog.NewTextHandler(logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if n := strings.Count(logs.String(), clusterauth.OpenWarning); n != 1 {
		t.Fatalf("the open-cluster warning was logged %d times, want 1:\n%s", n, logs)
	}
}
