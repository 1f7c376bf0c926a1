package e2e

// Issue 11 as a user meets it: the real binary, two users each on a
// machine of their own (a config directory), passwords from CHAT_PASSWORD.

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"chat/internal/clustertest"
	"chat/privatedm"
	"chat/proto"
)

// TestPrivateDirectMessagesWithTheBinary: a direct message between two
// claimed users is sealed on the wire (an eavesdropper on every topic sees
// only "e2e1:" text) and both read it, in their own history; a wrong
// password is refused.
func TestPrivateDirectMessagesWithTheBinary(t *testing.T) {
	c := startProcCluster(t, nil)
	client := func(password, configDir, script string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, c.bin, "client", "--server", c.front, "--sub", c.pubOut)
		cmd.Env = append(os.Environ(), "CHAT_PASSWORD="+password, "CHAT_CONFIG_DIR="+configDir)
		cmd.Stdin = strings.NewReader(script)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("chat client: %v\n%s", err, out)
		}
		return string(out)
	}
	wants := func(out string, want ...string) {
		t.Helper()
		for _, w := range want {
			if !strings.Contains(out, w) {
				t.Errorf("the client's output lacks %q:\n%s", w, out)
			}
		}
	}
	aliceDir, bobDir := t.TempDir(), t.TempDir()
	wants(client("bob-pw", bobDir, "/login bob\n"), "*** logged in as bob (account claimed now)")

	// An eavesdropper on every topic, heard a direct message to bob.
	heard := clustertest.Eavesdrop(t, c.pubOut)
	front := c.brokerClient()
	clustertest.WaitFor(t, 10*time.Second, "the eavesdropper to hear a direct message", func() bool {
		callOK(t, front, proto.Message, proto.Data{"src": "warm", "dst": "bob", "message": "warm-up"})
		return strings.Contains(heard.String(), "warm-up")
	})

	out := client("alice-pw", aliceDir, "/login alice\n/msg bob top secret plan\n/history @bob\n")
	wants(out, "*** logged in as alice (account claimed now)", "[private] -> *bob* top secret plan")
	if n := strings.Count(out, "[private] -> *bob* top secret plan"); n != 2 {
		t.Errorf("want the message shown as sent and in history, got it %d times:\n%s", n, out)
	}
	wants(client("bob-pw", bobDir, "/login bob\n/history @alice\n/whois alice\n"),
		"*** logged in as bob (account)", "[private] *alice* top secret plan", "*** alice: account (claimed), key fingerprint ")
	wants(client("guess", t.TempDir(), "/login alice\n"), `*** wrong password for "alice"`)

	clustertest.WaitFor(t, 10*time.Second, "the eavesdropper to hear the sealed message", func() bool {
		return strings.Contains(heard.String(), privatedm.Prefix)
	})
	if strings.Contains(heard.String(), "top secret") {
		t.Errorf("the eavesdropper read the private message:\n%s", heard.String())
	}
	if st, err := os.Stat(filepath.Join(aliceDir, "keys", "alice.key")); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("alice's key file: %v, %v", st, err)
	}
}
