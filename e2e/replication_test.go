package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"chat/internal/clustertest"
	"chat/proto"
	"chat/roles/server"
	"chat/transport"
)

// direct returns a request client to server i of a replicated cluster.
func direct(t testing.TB, c *clustertest.Replicated, i int) *transport.Client {
	return newClient(t, c.Servers[i].Addr())
}

// callOK sends a request until it is not refused with "retry" (the
// cluster may be electing) and returns the final reply's data.
func callOK(t testing.TB, c *transport.Client, service string, data proto.Data) proto.Data {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		d := call(t, c, service, data)
		if retry, _ := d["retry"].(bool); !retry || time.Now().After(deadline) {
			return d
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func wantStatus(t testing.TB, d proto.Data, want string) {
	t.Helper()
	if d["status"] != want {
		t.Fatalf("status %v, want %s: %v", d["status"], want, d)
	}
}

// Guarantee 1 of replication: once acknowledged, a write is seen by any
// later request to any server.
func TestReplicatedReadYourWritesAnywhere(t *testing.T) {
	c := clustertest.StartReplicated(t, 3, nil)
	s1, s2, s3 := direct(t, c, 0), direct(t, c, 1), direct(t, c, 2)

	wantStatus(t, callOK(t, s1, proto.Login, proto.Data{"user": "ana"}), proto.StatusSuccess)
	wantStatus(t, callOK(t, s2, proto.Channel, proto.Data{"channel": "lab"}), proto.StatusSuccess)
	for i := range 20 {
		srv := []*transport.Client{s1, s2, s3}[i%3]
		wantStatus(t, callOK(t, srv, proto.Publish, proto.Data{"user": "ana", "channel": "lab", "message": fmt.Sprint("post ", i)}), proto.StatusOK)
		// Read right after the acknowledgement, from the next server.
		next := []*transport.Client{s1, s2, s3}[(i+1)%3]
		msgs := callOK(t, next, proto.History, proto.Data{"channel": "lab", "limit": 100})["messages"].([]any)
		if len(msgs) != i+1 {
			t.Fatalf("after post %d, history from another server has %d posts", i, len(msgs))
		}
	}
	for i, s := range []*transport.Client{s1, s2, s3} {
		users := callOK(t, s, proto.Users, nil)["users"].([]any)
		if !slices.Contains(users, any("ana")) {
			t.Errorf("server-%d: users %v lack ana", i+1, users)
		}
	}
	// The same ids and order on every server.
	var first []any
	for i, s := range []*transport.Client{s1, s2, s3} {
		msgs := callOK(t, s, proto.History, proto.Data{"channel": "lab", "limit": 100})["messages"].([]any)
		var ids []any
		for _, m := range msgs {
			ids = append(ids, m.(map[string]any)["id"])
		}
		if i == 0 {
			first = ids
		} else if !slices.Equal(ids, first) {
			t.Errorf("server-%d has ids %v, server-1 %v", i+1, ids, first)
		}
	}

	// Through the broker, round-robin: create then join works at once.
	b := newClient(t, c.Broker.FrontAddr())
	for i := range 6 {
		ch := fmt.Sprint("room", i)
		wantStatus(t, callOK(t, b, proto.Channel, proto.Data{"channel": ch}), proto.StatusSuccess)
		chs := callOK(t, b, proto.Channels, nil)["channels"].([]any)
		if !slices.Contains(chs, any(ch)) {
			t.Fatalf("channel %s created through the broker is missing from the next channels reply %v", ch, chs)
		}
	}
}

// A dead coordinator is replaced, nothing acknowledged is lost, and the
// higher rank takes over again when it returns, with everything written
// meanwhile.
func TestReplicatedFailoverAndTakeover(t *testing.T) {
	c := clustertest.StartReplicated(t, 3, nil)
	leader := c.WaitLeader(5 * time.Second)
	if leader != 2 {
		t.Fatalf("leader is server-%d, want the highest rank server-3", leader+1)
	}
	b := newClient(t, c.Broker.FrontAddr())
	wantStatus(t, callOK(t, b, proto.Login, proto.Data{"user": "ana"}), proto.StatusSuccess)
	wantStatus(t, callOK(t, b, proto.Channel, proto.Data{"channel": "lab"}), proto.StatusSuccess)
	wantStatus(t, callOK(t, b, proto.Publish, proto.Data{"user": "ana", "channel": "lab", "message": "before"}), proto.StatusOK)

	stopped := time.Now()
	c.Stop(leader)
	next := c.WaitLeader(5 * time.Second)
	t.Logf("failover: server-%d leads %v after the coordinator stopped", next+1, time.Since(stopped).Round(time.Millisecond))
	if next != 1 {
		t.Errorf("after server-3 stopped, server-%d leads; want server-2", next+1)
	}
	for i := range 5 {
		wantStatus(t, callOK(t, b, proto.Publish, proto.Data{"user": "ana", "channel": "lab", "message": fmt.Sprint("during ", i)}), proto.StatusOK)
	}

	started := time.Now()
	c.Start(leader)
	clustertest.WaitFor(t, 5*time.Second, "server-3 to take over", func() bool { return c.Leader() == 2 })
	t.Logf("takeover: server-3 leads %v after it started", time.Since(started).Round(time.Millisecond))
	s3 := direct(t, c, 2)
	msgs := callOK(t, s3, proto.History, proto.Data{"channel": "lab", "limit": 100})["messages"].([]any)
	if len(msgs) != 6 {
		t.Fatalf("server-3 back: %d posts, want 6: %v", len(msgs), msgs)
	}
}

// While the reference is down the cluster keeps serving and electing; when
// it is back, its list is whole again.
func TestReplicatedReferenceDown(t *testing.T) {
	c := clustertest.StartReplicated(t, 3, nil)
	c.StopReference()
	b := newClient(t, c.Broker.FrontAddr())
	wantStatus(t, callOK(t, b, proto.Login, proto.Data{"user": "ana"}), proto.StatusSuccess)
	c.Stop(2)
	if next := c.WaitLeader(5 * time.Second); next != 1 {
		t.Errorf("with the reference down, server-%d leads; want server-2", next+1)
	}
	wantStatus(t, callOK(t, b, proto.Login, proto.Data{"user": "bia"}), proto.StatusSuccess)
	c.Start(2)
	c.WaitLeader(5 * time.Second)

	ref := c.StartReference()
	clustertest.WaitFor(t, 5*time.Second, "the reference's list to be whole again", func() bool {
		return len(ref.List(time.Now())) == 3
	})
}

// Berkeley: skews of -900 ms, 0 and +700 ms are within 5 ms of each other
// after one round.
func TestReplicatedBerkeleySyncsSkewedClocks(t *testing.T) {
	skews := []time.Duration{-900 * time.Millisecond, 0, 700 * time.Millisecond}
	i := 0
	c := clustertest.StartReplicated(t, 3, func(cfg *server.Config) {
		cfg.ClockSkew = skews[i]
		i++
		cfg.Cluster.BerkeleyInterval = 300 * time.Millisecond
	})
	clustertest.WaitFor(t, 5*time.Second, "the three clocks to agree within 5 ms", func() bool {
		var clocks []float64
		for j, s := range c.Servers {
			off, _ := s.Node().Status()["offset_ms"].(float64)
			clocks = append(clocks, float64(skews[j].Milliseconds())+off)
		}
		lo, hi := slices.Min(clocks), slices.Max(clocks)
		if hi-lo <= 5 {
			t.Logf("after sync: clocks (skew + offset, ms) %v, spread %.3f ms", clocks, hi-lo)
			return true
		}
		return false
	})
}

// A client that retries with the same request_id on another server (after
// a failover, say) has its write applied once.
func TestReplicatedRequestIDAcrossServers(t *testing.T) {
	c := clustertest.StartReplicated(t, 3, nil)
	s1, s2, s3 := direct(t, c, 0), direct(t, c, 1), direct(t, c, 2)
	wantStatus(t, callOK(t, s1, proto.Login, proto.Data{"user": "ana", "request_id": "l1"}), proto.StatusSuccess)
	wantStatus(t, callOK(t, s1, proto.Channel, proto.Data{"channel": "lab", "request_id": "c1"}), proto.StatusSuccess)
	post := proto.Data{"user": "ana", "channel": "lab", "message": "once", "request_id": "p1"}
	for _, s := range []*transport.Client{s1, s2, s3, s1} {
		wantStatus(t, callOK(t, s, proto.Publish, post), proto.StatusOK)
	}
	// Even a failed check is answered the same everywhere: the channel exists.
	for _, s := range []*transport.Client{s2, s3} {
		d := callOK(t, s, proto.Channel, proto.Data{"channel": "lab", "request_id": "c1"})
		wantStatus(t, d, proto.StatusSuccess)
	}
	c.Stop(2) // the coordinator
	c.WaitLeader(5 * time.Second)
	wantStatus(t, callOK(t, s2, proto.Publish, post), proto.StatusOK)
	msgs := callOK(t, s1, proto.History, proto.Data{"channel": "lab"})["messages"].([]any)
	if len(msgs) != 1 {
		t.Fatalf("a publish retried on 4 servers and after a failover is stored %d times: %v", len(msgs), msgs)
	}
}

// A server whose database was damaged comes back repaired (it keeps what
// is sound and copies the rest) without stalling the cluster: while it
// copies, it takes part in no election, even though it has the highest
// rank; once it holds everything again it takes over.
func TestReplicatedRepairedServerDoesNotStallTheCluster(t *testing.T) {
	c := clustertest.StartReplicated(t, 3, nil)
	b := newClient(t, c.Broker.FrontAddr())
	wantStatus(t, callOK(t, b, proto.Login, proto.Data{"user": "ana"}), proto.StatusSuccess)
	wantStatus(t, callOK(t, b, proto.Channel, proto.Data{"channel": "lab"}), proto.StatusSuccess)
	text := strings.Repeat("x", 1000)
	for i := range 600 {
		wantStatus(t, callOK(t, b, proto.Publish, proto.Data{"user": "ana", "channel": "lab", "message": fmt.Sprint(i, text)}), proto.StatusOK)
	}
	c.Stop(2)
	c.WaitLeader(5 * time.Second)
	db := filepath.Join(c.Configs[2].DataDir, "server-3.db")
	f, err := os.OpenFile(db, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	fi, _ := f.Stat()
	junk := make([]byte, 4096)
	for i := range junk {
		junk[i] = 0xa5
	}
	for off := int64(8192); off+4096 < fi.Size(); off += 8 * 4096 {
		f.WriteAt(junk, off) // damage every 8th page from the third on
	}
	f.Close()

	c.Start(2)
	// The cluster keeps a coordinator and takes writes meanwhile...
	for i := range 5 {
		wantStatus(t, callOK(t, b, proto.Publish, proto.Data{"user": "ana", "channel": "lab", "message": fmt.Sprint("after ", i)}), proto.StatusOK)
	}
	// ... and server-3, repaired and whole again, leads.
	clustertest.WaitFor(t, 15*time.Second, "the repaired server-3 to lead", func() bool { return c.Leader() == 2 })
	if _, err := os.Stat(db + ".damaged"); err != nil {
		t.Errorf("the damaged files were not kept: %v", err)
	}
	s3 := direct(t, c, 2)
	d := callOK(t, s3, proto.History, proto.Data{"channel": "lab", "limit": 10})
	msgs, _ := d["messages"].([]any)
	if len(msgs) == 0 || msgs[len(msgs)-1].(map[string]any)["message"] != "after 4" {
		t.Fatalf("server-3 repaired does not serve the newest post: %v", d)
	}
}
