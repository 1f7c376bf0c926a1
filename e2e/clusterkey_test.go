package e2e

import (
	"context"
	"fmt"
	"log/slog"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"chat/internal/clustertest"
	"chat/proto"
	"chat/roles/broker"
	"chat/roles/server"
	"chat/roles/status"
)

const e2eClusterKey = "e2e-cluster-key-0123456789abcdef"

// Issue 11: a cluster with a key works end to end (registration, the
// election, replication, failover, publications to standard
// subscribers, chat status with the key), and a server without the key
// joins nothing: the reference does not register it, the broker does not
// route to it.
func TestKeyedClusterEndToEnd(t *testing.T) {
	c := clustertest.StartReplicatedKeyed(t, 3, e2eClusterKey, nil)

	got := clustertest.Subscribe(t, c.Broker.PubOutAddr(), "lab")
	b := newClient(t, c.Broker.FrontAddr())
	wantStatus(t, callOK(t, b, proto.Login, proto.Data{"user": "ana"}), proto.StatusSuccess)
	wantStatus(t, callOK(t, b, proto.Channel, proto.Data{"channel": "lab"}), proto.StatusSuccess)
	i := 0
	f := publishUntilReceived(t, got, func() {
		i++
		wantStatus(t, callOK(t, b, proto.Publish, proto.Data{"user": "ana", "channel": "lab", "message": fmt.Sprint("post ", i)}), proto.StatusOK)
	})
	if len(f) != 2 || string(f[0]) != "lab" {
		t.Fatalf("a subscriber got %q, want the standard's [topic][payload]", f)
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

// keyedPublisher is another implementation's member, in Python with the
// standard library's hmac and hashlib only, written from PROTOCOL.md
// section 11: it publishes on publish-in with the authenticator frame,
// once with the cluster's key and once with another.
const keyedPublisher = `
import hashlib, hmac, msgpack, os, struct, sys, time, zmq
endpoint, key = sys.argv[1], sys.argv[2]
def mac_key(secret):
    prk = hmac.new(b"chat cluster key", secret.encode(), hashlib.sha256).digest()
    return hmac.new(prk, b"hmac-sha256 v1" + b"\x01", hashlib.sha256).digest()
sender, counter = os.urandom(8), 0
def tag(secret, frames):
    global counter
    counter += 1
    ms, nonce = int(time.time() * 1000), sender + struct.pack(">Q", counter)
    body = b"".join(struct.pack(">I", len(f)) + f for f in frames)
    mac = hmac.new(mac_key(secret), b"publish\x00" + struct.pack(">q", ms) + nonce + body, hashlib.sha256).digest()
    return msgpack.packb({"time": ms, "nonce": nonce, "mac": mac}, use_bin_type=True)
pub = zmq.Context().socket(zmq.PUB)
pub.connect(endpoint)
for i in range(200):
    for secret, text in ((key, b"genuine"), (key + "-wrong", b"forged")):
        frames = [b"lab", text]
        pub.send_multipart(frames + [tag(secret, frames)])
    time.sleep(0.05)
`

// Issue 11: the wire format of PROTOCOL.md section 11 is enough for
// another implementation: a Python publisher that follows it gets its
// publications through a keyed broker, and the same with another key are
// dropped.
func TestKeyedPublicationFromAnotherImplementation(t *testing.T) {
	requirePython(t)
	cfg := clustertest.BrokerConfig()
	cfg.ClusterKey = e2eClusterKey
	b, err := broker.Start(context.Background(), cfg, clustertest.Log())
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	got := clustertest.Subscribe(t, b.PubOutAddr(), "lab")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cmd := exec.CommandContext(ctx, pythonInterpreter, "-c", keyedPublisher, b.PubInAddr(), e2eClusterKey)
	var out clustertest.Output
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cancel(); cmd.Wait() }()
	deadline := time.After(10 * time.Second)
	for genuine := 0; genuine < 5; {
		select {
		case f := <-got:
			if string(f[1]) != "genuine" {
				t.Fatalf("the subscriber got %q: a publication under another key went through", f)
			}
			genuine++
		case <-deadline:
			t.Fatalf("%d of the Python member's publications reached the subscriber in 10 s; python said: %s", genuine, out.String())
		}
	}
}
