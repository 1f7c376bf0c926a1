package roles

import (
	"bytes"
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
