package e2e

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"chat/internal/clustertest"
	"chat/internal/testnet"
	"chat/proto"
)

// foreignScript is a server of another implementation of the standard
// (pyzmq), relative to this package's directory.
const foreignScript = "../test/interop/foreign_server.py"

// TestMixedClusterWithAForeignServer adds a server written by "another
// team" to our cluster, with the highest rank. It answers the standard's
// clock, election and adjust, and nothing of our replication: our servers
// tell it apart (it refuses `ping`), leave it out of the election and
// replication, keep serving, and the coordinator still syncs its clock.
func TestMixedClusterWithAForeignServer(t *testing.T) {
	if out, err := exec.Command(pythonInterpreter, "-c", "import zmq, msgpack").CombinedOutput(); err != nil {
		msg := "python3 with zmq and msgpack is not available: " + strings.TrimSpace(string(out))
		if os.Getenv("CHAT_REQUIRE_PYTHON") != "" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	c := clustertest.StartReplicated(t, 3, nil)
	listen := testnet.FreeEndpoint(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cmd := exec.CommandContext(ctx, pythonInterpreter, foreignScript,
		"--reference", c.Reference.Addr(), "--listen", listen, "--name", "foreign-1", "--seconds", "30")
	var out clustertest.Output
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cancel(); cmd.Wait() }()

	clustertest.WaitFor(t, 10*time.Second, "the foreign server to register", func() bool {
		return strings.Contains(out.String(), "registered rank 4")
	})
	clustertest.WaitFor(t, 10*time.Second, "the reference to list the foreign server", func() bool {
		return len(c.Reference.List(time.Now())) == 4
	})
	// It is asked `ping` (and refuses it) ...
	clustertest.WaitFor(t, 5*time.Second, "our servers to ping the foreign server", func() bool {
		return strings.Contains(out.String(), "served ping")
	})
	// ... and our highest rank stays the coordinator, and writes work.
	if leader := c.WaitLeader(5 * time.Second); leader != 2 {
		t.Fatalf("with a foreign server of rank 4, server-%d leads; want server-3", leader+1)
	}
	b := newClient(t, c.Broker.FrontAddr())
	for i := range 5 {
		wantStatus(t, callOK(t, b, proto.Login, proto.Data{"user": "ana" + string(rune('a'+i))}), proto.StatusSuccess)
	}
	// The coordinator polls its clock like anyone's (Berkeley, every 10 requests or 5 s).
	clustertest.WaitFor(t, 10*time.Second, "a Berkeley round to include the foreign server", func() bool {
		return strings.Contains(out.String(), "served clock") && strings.Contains(out.String(), "adjusted")
	})
	t.Logf("the foreign server saw:\n%s", out.String())
}
