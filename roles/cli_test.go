package roles

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// run runs `chat args...` in-process and returns what a user sees: the
// exit code, stdout and stderr (with the error line main prints).
func run(args ...string) (code int, stdout, stderr string) {
	var out, errOut bytes.Buffer
	err := App(strings.NewReader(""), &out, &errOut).Run(append([]string{"chat"}, args...))
	if err != nil {
		fmt.Fprintln(&errOut, "chat:", err) // as main does
	}
	return ExitCode(err), out.String(), errOut.String()
}

// runWants runs `chat args...` and checks its exit code and that stderr
// holds every one of wants.
func runWants(t *testing.T, code int, args []string, wants ...string) (stdout, stderr string) {
	t.Helper()
	got, stdout, stderr := run(args...)
	if got != code {
		t.Errorf("chat %s: exit %d, want %d (stderr: %s)", strings.Join(args, " "), got, code, stderr)
	}
	for _, want := range wants {
		if !strings.Contains(stderr, want) {
			t.Errorf("chat %s: stderr %q does not say %q", strings.Join(args, " "), stderr, want)
		}
	}
	return stdout, stderr
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

// Issue 10: an endpoint flag not written tcp://host:port was accepted
// (each request then took 9 s to fail, a subscriber warned every 500 ms
// forever, the broker exited 1). Now it is a usage error, at once, with
// one sentence showing the form expected.
func TestEndpointsAreCheckedUpFront(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"client", "--server", "localhost:5555"}, `--server: "localhost:5555" is not an endpoint: write it tcp://host:port, as in tcp://localhost:5555`},
		{[]string{"client", "--server", "tcp://localhost:5555,localhost:5565"}, `"localhost:5565" is not an endpoint`},
		{[]string{"client", "--sub", "localhost:5558"}, `--sub: "localhost:5558" is not an endpoint: write it tcp://host:port, as in tcp://localhost:5558`},
		{[]string{"bot", "--server", "localhost:5555"}, `--server: "localhost:5555" is not an endpoint`},
		{[]string{"bot", "--sub", "5558"}, `--sub: "5558" is not an endpoint`},
		{[]string{"broker", "--front", "5555"}, `--front: "5555" is not an endpoint: write it tcp://host:port, as in tcp://*:5555`},
		{[]string{"broker", "--back", "tcp://*"}, `--back: "tcp://*" is not an endpoint`},
		{[]string{"broker", "--pub-in", "udp://*:5557"}, `--pub-in: "udp://*:5557" is not an endpoint: write it tcp://host:port, as in tcp://*:5557`},
		{[]string{"broker", "--pub-out", "tcp://*:http"}, `--pub-out: "tcp://*:http" has no valid port`},
		{[]string{"reference", "--listen", "*:5559"}, `--listen: "*:5559" is not an endpoint`},
		{[]string{"server", "--name", "s", "--listen", "tcp://*:70000"}, `--listen: "tcp://*:70000" has no valid port: write it tcp://host:port with a port from 0 to 65535`},
		{[]string{"server", "--name", "s", "--advertise", "host:5560"}, `--advertise: "host:5560" is not an endpoint`},
		{[]string{"server", "--name", "s", "--broker-back", "localhost:5556"}, `--broker-back: "localhost:5556"`},
		{[]string{"server", "--name", "s", "--broker-pub", "localhost:5557"}, `--broker-pub: "localhost:5557"`},
		{[]string{"server", "--name", "s", "--broker-sub", "localhost:5558"}, `--broker-sub: "localhost:5558"`},
		{[]string{"server", "--name", "s", "--reference", "localhost:5559"}, `--reference: "localhost:5559"`},
		{[]string{"status", "--reference", ":5559"}, `--reference: ":5559" is not an endpoint: write it tcp://host:port, as in tcp://localhost:5559`},
		{[]string{"health", "--endpoint", "localhost"}, `--endpoint: "localhost" is not an endpoint`},
	} {
		runWants(t, ExitUsage, tc.args, tc.want)
	}
}

// An endpoint set by its CHAT_ variable is named by the variable.
func TestEndpointFromTheEnvironmentIsNamed(t *testing.T) {
	t.Setenv("CHAT_SERVER", "localhost:5555")
	runWants(t, ExitUsage, []string{"client"}, `CHAT_SERVER (--server): "localhost:5555" is not an endpoint: write it tcp://host:port, as in tcp://localhost:5555`)
	runWants(t, ExitUsage, []string{"client", "--server", "localhost:5565"}, `--server: "localhost:5565" is not an endpoint`)
}

// Issue 10: `chat help`, `chat version` and an unknown command exited 3
// ("No help topic for 'help'"), `--version` was refused.
func TestHelpVersionAndUnknownCommands(t *testing.T) {
	for _, args := range [][]string{{"help"}, {"--help"}, {"-h"}, {"help", "server"}, {"server", "--help"}, {}} {
		code, out, stderr := run(args...)
		if code != ExitOK || !strings.Contains(out, "USAGE:") {
			t.Errorf("chat %v: exit %d, stdout %q, stderr %q", args, code, out, stderr)
		}
	}
	if _, out, _ := run("help", "server"); !strings.Contains(out, "--broker-back") {
		t.Errorf("chat help server does not show the server's flags:\n%s", out)
	}
	for _, args := range [][]string{{"version"}, {"--version"}} {
		code, out, _ := run(args...)
		if code != ExitOK || out != "chat version "+version()+"\n" || version() == "" {
			t.Errorf("chat %v: exit %d, stdout %q", args, code, out)
		}
	}
	runWants(t, ExitUsage, []string{"nope"}, `there is no command "nope": the commands are up, server, broker, reference, client, bot, status, health, help, version (see chat help)`)
	runWants(t, ExitUsage, []string{"help", "nope"}, `there is no command "nope"`)
	runWants(t, ExitUsage, []string{"version", "x"}, `version takes no arguments`)
}

func TestVersionCanBeSetWhenBuilding(t *testing.T) {
	defer func(v string) { Version = v }(Version)
	Version = "1.2.3" // as -ldflags "-X chat/roles.Version=1.2.3" does
	if code, out, _ := run("--version"); code != ExitOK || out != "chat version 1.2.3\n" {
		t.Errorf("chat --version: exit %d, %q", code, out)
	}
}

// Issue 10: `chat server --log-level debug` was refused (flag provided
// but not defined). The global flags now work on either side of the
// command, and the command line wins over CHAT_LOG_LEVEL.
func TestGlobalFlagsAfterTheCommand(t *testing.T) {
	want := `--log-level "loud" is not a level: use debug, info, warn or error`
	runWants(t, ExitUsage, []string{"server", "--log-level", "loud", "--name", "s"}, want)
	runWants(t, ExitUsage, []string{"--log-level", "loud", "server", "--name", "s"}, want)
	// Accepted after the command: what fails next is the name, checked later.
	runWants(t, ExitUsage, []string{"server", "--log-level", "debug", "--log-json", "--name", "bad name"}, `bad name "bad name"`)

	t.Setenv("CHAT_LOG_LEVEL", "loud")
	runWants(t, ExitUsage, []string{"server", "--name", "s"}, want)
	runWants(t, ExitUsage, []string{"server", "--log-level", "debug", "--name", "bad name"}, `bad name "bad name"`)
	runWants(t, ExitUsage, []string{"--log-level", "debug", "server", "--name", "bad name"}, `bad name "bad name"`)
}

// Issue 10: a bad CHAT_* value gave the parser's message
// (could not parse "abc" as int value ... strconv.ParseInt: ...).
func TestBadEnvironmentVariableIsNamed(t *testing.T) {
	for _, tc := range []struct{ name, value, command, want string }{
		{"CHAT_COUNT", "abc", "bot", `CHAT_COUNT="abc" is not valid: it sets --count, which takes a whole number, such as 10`},
		{"CHAT_RATE", "fast", "bot", `CHAT_RATE="fast" is not valid: it sets --rate, which takes a number, such as 2.5`},
		{"CHAT_TIMEOUT", "5", "client", `CHAT_TIMEOUT="5" is not valid: it sets --timeout, which takes a duration with its unit, such as 500ms, 3s or 1m`},
		{"CHAT_LOG_JSON", "maybe", "broker", `CHAT_LOG_JSON="maybe" is not valid: it sets --log-json, which takes true or false`},
		{"CHAT_WATCH", "sometimes", "status", `CHAT_WATCH="sometimes" is not valid: it sets --watch, which takes true or false`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv(tc.name, tc.value)
			_, stderr := runWants(t, ExitUsage, []string{tc.command}, tc.want)
			if strings.Contains(stderr, "strconv") || strings.Contains(stderr, "could not parse") {
				t.Errorf("the parser's message is shown: %s", stderr)
			}
		})
	}
}

// Issue 10: a port in use was reported under the internal scheme
// (could not listen to "gtcp://..."). It names the endpoint as written.
func TestPortInUseNamesTheEndpoint(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	ep := "tcp://" + taken.Addr().String()
	want := "cannot listen on " + ep + ": the port is already in use (stop what uses it, or choose another port)"
	for _, args := range [][]string{
		{"reference", "--listen", ep, "--data", t.TempDir()},
		{"broker", "--front", ep, "--back", "tcp://127.0.0.1:0", "--pub-in", "tcp://127.0.0.1:0", "--pub-out", "tcp://127.0.0.1:0"},
		{"server", "--name", "s", "--listen", ep, "--data", t.TempDir(), "--reference", "", "--broker-back", "", "--broker-pub", "", "--broker-sub", ""},
	} {
		_, stderr := runWants(t, ExitFailure, args, want)
		if strings.Contains(stderr, "gtcp") {
			t.Errorf("chat %s names the internal scheme: %s", args[0], stderr)
		}
	}
}

// Issue 10: --name is also the data file's name; a name that is a path
// (../escape) must not write outside --data. The protocol's name rules
// refuse it, before anything is created.
func TestServerNameCannotLeaveTheDataDirectory(t *testing.T) {
	parent := t.TempDir()
	data := filepath.Join(parent, "data")
	for _, name := range []string{"../escape", "a/b", `a\b`, "..", "."} {
		runWants(t, ExitUsage, []string{"server", "--name", name, "--data", data, "--listen", "tcp://127.0.0.1:0",
			"--reference", "", "--broker-back", "", "--broker-pub", "", "--broker-sub", ""}, "bad name")
	}
	if entries, _ := os.ReadDir(parent); len(entries) != 0 {
		t.Errorf("a refused name created files: %v", entries)
	}
}

// Issue 10: `chat up` rejects stray arguments and a --host that is not a
// host; its help says what it starts and where.
func TestUpUsage(t *testing.T) {
	runWants(t, ExitUsage, []string{"up", "extra"}, `up takes no arguments (got "extra")`)
	for _, host := range []string{"tcp://127.0.0.1", "127.0.0.1:80", "", "[::1]", "a b"} {
		runWants(t, ExitUsage, []string{"up", "--host", host}, fmt.Sprintf("--host %q is not a host", host))
	}
	_, out, _ := run("up", "--help")
	for _, want := range []string{"5559", "5555-5558", "5561-5563", "--host", "--data", "--bots", "CHAT_HOST"} {
		if !strings.Contains(out, want) {
			t.Errorf("chat up --help does not mention %s:\n%s", want, out)
		}
	}
}

func TestCheckHost(t *testing.T) {
	for _, host := range []string{"127.0.0.1", "0.0.0.0", "localhost", "::1", "server-1.example"} {
		if err := checkHost(host); err != nil {
			t.Errorf("checkHost(%q): %v", host, err)
		}
	}
}

// Issue 10: `chat bot` where nothing answers printed sent=0 acked=0
// errors=0 and exited 0. It exits 1 and says so.
func TestBotWhereNothingAnswersFails(t *testing.T) {
	free, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ep := "tcp://" + free.Addr().String()
	free.Close() // nothing listens there any more
	start := time.Now()
	runWants(t, ExitFailure, []string{"bot", "--server", ep, "--sub", "", "--duration", "300ms"},
		"bot: nothing answered at "+ep+": not one request got a reply (is the broker running there?)")
	if time.Since(start) > 20*time.Second {
		t.Errorf("chat bot --duration 300ms took %v", time.Since(start))
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

// A password file that cannot be read stops the client and the bots
// before anything starts.
func TestPasswordFileIsRead(t *testing.T) {
	missing := t.TempDir() + "/none"
	runWants(t, ExitUsage, []string{"client", "--password-file", missing}, "read the password file")
	runWants(t, ExitUsage, []string{"bot", "--password-file", missing}, "read the password file")
	empty := t.TempDir() + "/empty"
	if err := os.WriteFile(empty, []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	runWants(t, ExitUsage, []string{"client", "--password-file", empty}, "the password is empty")
}

func TestReadPasswordFile(t *testing.T) {
	dir := t.TempDir()
	write := func(content string) string {
		path := filepath.Join(dir, "pw")
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	for _, tc := range []struct{ content, want string }{
		{"s3cret\n", "s3cret"},
		{"s3cret", "s3cret"},
		{"s3cret\r\n", "s3cret"},
		{"s3cret\nsecond line\n", "s3cret"},
		{" a b \n", " a b "},
	} {
		if got, err := readPasswordFile(write(tc.content)); err != nil || got != tc.want {
			t.Errorf("readPasswordFile(%q) = %q, %v; want %q", tc.content, got, err, tc.want)
		}
	}
	for _, content := range []string{"", "\n", "\r\n", "\nsecond line\n"} {
		if got, err := readPasswordFile(write(content)); !errors.Is(err, errEmptyPassword) {
			t.Errorf("readPasswordFile(%q) = %q, %v; want errEmptyPassword", content, got, err)
		}
	}
	if _, err := readPasswordFile(filepath.Join(dir, "missing")); err == nil || !strings.Contains(err.Error(), "password file") {
		t.Errorf("missing file: %v", err)
	}
}
