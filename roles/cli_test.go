package roles

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
)

func run(args ...string) (code int, stdout, stderr string) {
	var out, errOut bytes.Buffer
	err := App(strings.NewReader(""), &out, &errOut).Run(append([]string{"chat"}, args...))
	return ExitCode(err), out.String(), errOut.String()
}

func TestBadUsageExitsWith2(t *testing.T) {
	for _, args := range [][]string{
		{"server"},                          // --name is required
		{"server", "--name", "bad name"},    // invalid name
		{"server", "--name", "s", "--nope"}, // unknown flag
		{"bot", "--count", "-1"},
		{"--log-level", "loud", "broker"},
	} {
		if code, _, _ := run(args...); code != ExitUsage {
			t.Errorf("chat %v: exit %d, want %d", args, code, ExitUsage)
		}
	}
}

func TestHelpExplainsEachRole(t *testing.T) {
	for _, role := range []string{"up", "server", "broker", "client", "bot"} {
		code, out, _ := run(role, "--help")
		if code != ExitOK || !strings.Contains(out, "CHAT_") && !strings.Contains(out, "--") {
			t.Errorf("chat %s --help: exit %d, output %q", role, code, out)
		}
	}
}

func TestEveryFlagHasItsEnvironmentVariable(t *testing.T) {
	t.Setenv("CHAT_NAME", "bad name") // read as --name: fails validation
	if code, _, stderr := run("server"); code != ExitUsage {
		t.Fatalf("CHAT_NAME not read as --name: exit %d, %s", code, stderr)
	}
}

// --cluster-key (CHAT_CLUSTER_KEY) is read by every role of the cluster,
// and by status and up: a key too short to be one is a usage error.
func TestEveryMemberTakesTheClusterKey(t *testing.T) {
	for _, role := range [][]string{{"server", "--name", "s"}, {"broker"}, {"reference"}, {"status"}, {"up"}} {
		args := append(append([]string{"chat"}, role...), "--cluster-key", "short")
		err := App(strings.NewReader(""), &bytes.Buffer{}, &bytes.Buffer{}).Run(args)
		if ExitCode(err) != ExitUsage || !strings.Contains(fmt.Sprint(err), "at least 16 characters") {
			t.Errorf("%v: exit %d, %v; want a usage error about the key", args, ExitCode(err), err)
		}
	}
	t.Setenv("CHAT_CLUSTER_KEY", "short")
	if code, _, _ := run("broker"); code != ExitUsage {
		t.Fatalf("CHAT_CLUSTER_KEY not read as --cluster-key: exit %d", code)
	}
}
