//go:build linux

package passwordprompt

import (
	"io"
	"regexp"
	"strings"
	"testing"
	"time"

	"chat/internal/poll"

	"github.com/creack/pty"
	"golang.org/x/sys/unix"
)

// TestReadOnATerminalDoesNotEcho types a password into a pseudo-terminal
// and reads its screen: the prompt shows, the password does not, and the
// terminal echoes again afterwards.
func TestReadOnATerminalDoesNotEcho(t *testing.T) {
	keyboard, tty, err := pty.Open()
	if err != nil {
		t.Skipf("no pseudo-terminal here: %v", err)
	}
	var screen poll.Output
	copied := make(chan struct{})
	go func() { // ends when tty is closed: reading keyboard then fails
		defer close(copied)
		io.Copy(&screen, keyboard)
	}()
	defer func() {
		io.WriteString(keyboard, "\n") // ends a Read still waiting, if the test failed early
		tty.Close()
		<-copied
		keyboard.Close()
	}()

	echoes := func() bool {
		state, err := unix.IoctlGetTermios(int(tty.Fd()), unix.TCGETS)
		if err != nil {
			t.Fatal(err)
		}
		return state.Lflag&unix.ECHO != 0
	}
	if !echoes() {
		t.Fatal("the new terminal does not echo to begin with")
	}

	type result struct {
		password string
		err      error
	}
	done := make(chan result, 1)
	go func() {
		password, err := Read(tty, tty, "Password: ")
		done <- result{password, err}
	}()

	// Type only once echo is off, as a person would after the prompt.
	poll.WaitFor(t, 5*time.Second, "echo switched off", func() bool { return !echoes() })
	if _, err := io.WriteString(keyboard, "s3cret pässwörd\n"); err != nil {
		t.Fatal(err)
	}
	var got result
	select {
	case got = <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Read did not return after the password was typed")
	}
	if got.err != nil || got.password != "s3cret pässwörd" {
		t.Fatalf("Read = %q, %v", got.password, got.err)
	}

	// Read ends the prompt's line itself. Had the terminal echoed, the
	// password would be on the screen before that line break.
	promptLine := regexp.MustCompile(`Password: [^\n]*\n`)
	poll.WaitFor(t, 5*time.Second, "the prompt's line on the screen", func() bool {
		return promptLine.MatchString(screen.String())
	})
	if s := screen.String(); strings.Contains(s, "s3cret") {
		t.Fatalf("the password was echoed: screen %q", s)
	}
	if !echoes() {
		t.Fatal("the terminal does not echo after Read")
	}
}
