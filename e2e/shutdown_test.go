package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"chat/internal/clustertest"
	"chat/internal/testnet"
	"chat/proto"
)

// TestSIGTERMStopsEveryRoleCleanly runs a broker and a server as real
// processes, sends them traffic, then SIGTERM: each exits 0 within
// seconds, and the server leaves its store closed (everything indexed into
// SQLite, no change log left to replay).
func TestSIGTERMStopsEveryRoleCleanly(t *testing.T) {
	bin := buildChat(t)
	front, back, pubIn, pubOut, listen := testnet.FreeEndpoint(t), testnet.FreeEndpoint(t), testnet.FreeEndpoint(t), testnet.FreeEndpoint(t), testnet.FreeEndpoint(t)
	data := t.TempDir()
	brk := exec.Command(bin, "broker", "--front", front, "--back", back, "--pub-in", pubIn, "--pub-out", pubOut)
	srv := exec.Command(bin, "server", "--name", "s1", "--listen", listen, "--broker-back", back,
		"--broker-pub", pubIn, "--reference", "", "--data", data)
	for _, cmd := range []*exec.Cmd{brk, srv} {
		if os.Getenv("CHAT_TEST_LOG") != "" {
			cmd.Stderr = os.Stderr
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		defer cmd.Process.Kill()
	}
	cl := newClient(t, front)
	clustertest.WaitFor(t, 15*time.Second, "a request through the broker to succeed", func() bool {
		env, err := callEnv(cl, proto.Channel, proto.Data{"channel": "g"})
		return err == nil && env.Data["status"] == proto.StatusSuccess
	})
	for range 50 {
		expectStatus(t, call(t, cl, proto.Publish, proto.Data{"user": "u", "channel": "g", "message": "m"}), proto.StatusOK)
	}

	for _, cmd := range []*exec.Cmd{srv, brk} {
		cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("%s exited with %v after SIGTERM, want 0", cmd.Args[1], err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%s still running 10s after SIGTERM", cmd.Args[1])
		}
	}
	logs, _ := filepath.Glob(filepath.Join(data, "s1.db-log", "*.log"))
	if len(logs) != 0 {
		t.Fatalf("the server left change log segments behind: %v", logs)
	}
}
