package e2e

// The command line as a user meets it (issue 10): the README's pipe
// example on fresh data, and the usage errors of the real binary, with
// their exit codes and messages.

import (
	"context"
	"errors"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// runChat runs the built binary with stdin and returns its exit code and
// its combined output. It fails the test if the command outlives within.
func runChat(t *testing.T, bin, stdin string, within time.Duration, args ...string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("chat %s still running after %v:\n%s", strings.Join(args, " "), within, out)
	}
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		return exit.ExitCode(), string(out)
	}
	if err != nil {
		t.Fatal(err)
	}
	return 0, string(out)
}

// Issue 10: the README's pipe example failed on a fresh system ("there is
// no channel #geral"). Here it runs, as written, against a fresh cluster
// of real processes.
func TestReadmePipeExampleOnFreshData(t *testing.T) {
	c := startProcCluster(t, nil)
	pipe := "/login a\n/create geral\n/join geral\nhi\n/history\n" // README.md, "Run it"
	code, out := runChat(t, c.bin, pipe, 30*time.Second, "client", "--server", c.front, "--sub", c.pubOut)
	if code != 0 {
		t.Fatalf("exit %d:\n%s", code, out)
	}
	for _, want := range []string{"logged in as a", "channel #geral created", "joined #geral", "#geral <a> hi"} {
		if !strings.Contains(out, want) {
			t.Errorf("the pipe's output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "there is no channel") {
		t.Errorf("the channel just created is not found:\n%s", out)
	}
}

// Issue 10: usage errors of the real binary exit 2 at once, with one
// sentence; before, a missing tcp:// made each request take 9 s to fail,
// a subscriber warn every 500 ms forever, the broker exit 1.
func TestUsageErrorsOfTheBinary(t *testing.T) {
	bin := buildChat(t)
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"client", "--server", "localhost:5555"}, 2, `chat: --server: "localhost:5555" is not an endpoint: write it tcp://host:port, as in tcp://localhost:5555`},
		{[]string{"client", "--sub", "localhost:5558"}, 2, `chat: --sub: "localhost:5558" is not an endpoint: write it tcp://host:port, as in tcp://localhost:5558`},
		{[]string{"broker", "--front", "5555"}, 2, `chat: --front: "5555" is not an endpoint: write it tcp://host:port, as in tcp://*:5555`},
		{[]string{"nope"}, 2, `chat: there is no command "nope"`},
		{[]string{"help", "nope"}, 2, `chat: there is no command "nope"`},
		{[]string{"server", "--name", "../escape"}, 2, `chat: server: bad name "../escape"`},
		{[]string{"up", "stray"}, 2, `chat: up takes no arguments (got "stray")`},
		{[]string{"server", "--log-level", "loud", "--name", "s"}, 2, `chat: --log-level "loud" is not a level: use debug, info, warn or error`},
		{[]string{"help"}, 0, "USAGE:"},
		{[]string{"--help"}, 0, "USAGE:"},
		{[]string{"version"}, 0, "chat version "},
		{[]string{"--version"}, 0, "chat version "},
	} {
		code, out := runChat(t, bin, "", 10*time.Second, tc.args...)
		if code != tc.code || !strings.Contains(out, tc.want) {
			t.Errorf("chat %s: exit %d, output %q; want exit %d and %q", strings.Join(tc.args, " "), code, out, tc.code, tc.want)
		}
	}
}
