package e2e

import (
	"bufio"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"
)

// pythonInterpreter is Debian's python3, which has python3-zmq (libzmq) and
// python3-msgpack; a python3 earlier in PATH (pyenv) may lack them.
const pythonInterpreter = "/usr/bin/python3"

// interopScript is the libzmq client of test/interop, relative to this
// package's directory (where go test runs).
const interopScript = "../test/interop/interop.py"

// TestPythonInterop runs a client written with pyzmq (libzmq) and msgpack,
// as another team would write one, against the broker's front and a
// server's own endpoint, and watches the publications on the broker's XPUB.
// Each check of the script is one line of its output, "PASS name" or
// "FAIL name: why".
func TestPythonInterop(t *testing.T) {
	if out, err := exec.Command(pythonInterpreter, "-c", "import zmq, msgpack").CombinedOutput(); err != nil {
		msg := "python3 with zmq and msgpack is not available (apt-get install python3-zmq python3-msgpack): " +
			strings.TrimSpace(string(out)) + " " + err.Error()
		if os.Getenv("CHAT_REQUIRE_PYTHON") != "" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}

	c := startCluster(t, 1)
	args := []string{interopScript,
		"--req", c.Broker.FrontAddr(),
		"--req", c.Servers[0].Addr(),
		"--sub", c.Broker.PubOutAddr(),
	}

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, pythonInterpreter, args...)
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	cmd.WaitDelay = 5 * time.Second

	// Stream the output as it comes (t.Log: shown with -v, and always when
	// the test fails), and keep the failures to repeat them at the end.
	var (
		mu       sync.Mutex
		lines    []string
		failures []string
		summary  string
	)
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			t.Log(line)
			mu.Lock()
			lines = append(lines, line)
			switch {
			case strings.HasPrefix(line, "FAIL "):
				failures = append(failures, line)
			case strings.HasSuffix(line, " failed") && strings.Contains(line, " passed, "):
				summary = line
			}
			mu.Unlock()
		}
		io.Copy(io.Discard, pr) // a line too long for the scanner: keep the pipe flowing
	}()

	t.Logf("running %s %s", pythonInterpreter, strings.Join(args, " "))
	if err := cmd.Start(); err != nil {
		pw.Close()
		<-done
		t.Fatalf("start %s: %v", pythonInterpreter, err)
	}
	err := cmd.Wait()
	pw.Close()
	<-done

	mu.Lock()
	defer mu.Unlock()
	if ctx.Err() != nil {
		t.Fatalf("interop script did not finish within the timeout (%d lines of output above)", len(lines))
	}
	if err != nil {
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			t.Fatalf("interop script: %v", err)
		}
		if len(failures) > 0 {
			t.Errorf("interop checks failed:\n%s", strings.Join(failures, "\n"))
		}
		t.Fatalf("interop script exited with %v (summary: %q)", err, summary)
	}
	if summary == "" || !strings.HasSuffix(summary, ", 0 failed") {
		t.Fatalf("interop script exited 0 without a clean summary line (got %q)", summary)
	}
	t.Log(summary)
}
