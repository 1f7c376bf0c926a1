//go:build unix

package client

import (
	"context"
	"io"
	"os"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/creack/pty"
	"golang.org/x/term"

	"chat/internal/clustertest"
	"chat/internal/poll"
)

// Issue 10: on a terminal there was no input line: no prompt, incoming
// posts landed in the middle of what was being typed, and Up posted
// "ESC[A". TestTerminal drives the client in a pseudo-terminal and checks
// the screen, as the terminal shows it.
func TestTerminal(t *testing.T) {
	sys := startSystem(t)
	ptmx, tty, alice := openPTY(t)
	before, err := term.GetState(int(tty.Fd()))
	if err != nil {
		t.Fatal(err)
	}

	done := make(chan error, 1)
	go func() {
		done <- Run(t.Context(), testConfig([]string{sys.front}, sys.pubOut), tty, tty, clustertest.Log())
	}()
	typeIn := func(s string) { ptmx.WriteString(s) }

	server := strings.TrimPrefix(sys.front, "tcp://")
	alice.waitInput(t, "["+server+" · sub ok] > ") // raw mode is on: typing is safe
	typeIn("/login alice\r")
	alice.waitInput(t, "password for alice (empty: no account): ")
	typeIn("\r/join #lab\r") // no password: an open name
	alice.waitLine(t, "*** logged in as alice")
	alice.waitLine(t, "*** joined #lab")
	alice.waitInput(t, "[alice@"+server+" · sub ok] #lab> ")

	// A post arrives while alice types: it goes above the input line, and
	// what she typed is still there, under it.
	typeIn("half typed")
	alice.waitInput(t, "[alice@"+server+" · sub ok] #lab> half typed")
	bob := startUser(t, testConfig([]string{sys.front}, sys.pubOut))
	bob.do(t, "/login bob", "logged in as bob")
	bob.do(t, "/join lab", "joined #lab")
	bob.do(t, "hello from bob", "#lab <bob> hello from bob")
	alice.waitLineEnding(t, "#lab <bob> hello from bob")
	alice.waitInput(t, "[alice@"+server+" · sub ok] #lab> half typed")
	for _, l := range alice.lines() {
		if strings.Contains(l, "half typed[") || strings.Contains(l, "half typed***") {
			t.Fatal("a line landed in the input line")
		}
	}
	typeIn(" message\r")
	bob.out.waitFor(t, "#lab <alice> half typed message", 1)

	// Up brings the line back (history); it is not posted as "ESC[A".
	typeIn("\x1b[A")
	alice.waitInput(t, "[alice@"+server+" · sub ok] #lab> half typed message")
	typeIn("\x15/me waves\r") // Ctrl-U clears the line
	bob.out.waitFor(t, "#lab * alice waves", 1)
	if strings.Contains(bob.out.String(), "[A") {
		t.Fatalf("the Up key was posted:\n%s", bob.out)
	}

	// The status line counts the unread posts of the other channels.
	typeIn("/join ops\r")
	alice.waitInput(t, "[alice@"+server+" · sub ok · #lab] #ops> ")
	bob.do(t, "one", "<bob> one")
	bob.do(t, "two", "<bob> two")
	alice.waitInput(t, "[alice@"+server+" · sub ok · #lab(2)] #ops> ")
	typeIn("/window\r")
	alice.waitLine(t, "*** windows: 1:#lab (2 unread), 2:#ops (current)")
	typeIn("/window 1\r")
	alice.waitInput(t, "[alice@"+server+" · sub ok · #ops] #lab> ")

	// Ctrl-D on an empty line ends the client and restores the terminal.
	typeIn("\x04")
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Ctrl-D did not end the client")
	}
	after, err := term.GetState(int(tty.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(before, after) {
		t.Fatal("the terminal was left in raw mode")
	}

	// So does the end of the context (SIGTERM, Ctrl-C in chat up...).
	ctx, cancel := context.WithCancel(t.Context())
	go func() { done <- Run(ctx, testConfig([]string{sys.front}, ""), tty, tty, clustertest.Log()) }()
	alice.waitInput(t, "["+server+" · no sub] > ")
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if after, _ := term.GetState(int(tty.Fd())); !reflect.DeepEqual(before, after) {
		t.Fatal("the terminal was left in raw mode after the context ended")
	}
}

// openPTY opens a pseudo-terminal of 40 rows and 200 columns, or
// skips the test where there is none: the client runs on tty, the test
// types into ptmx and reads on screen what the terminal shows (in the log
// when the test fails). Both ends close when the test ends.
func openPTY(t *testing.T) (ptmx, tty *os.File, screen *ptyScreen) {
	t.Helper()
	ptmx, tty, err := pty.Open()
	if err != nil {
		t.Skipf("no pseudo-terminal here: %v", err)
	}
	t.Cleanup(func() { ptmx.Close(); tty.Close() })
	if err := pty.Setsize(ptmx, &pty.Winsize{Rows: 40, Cols: 200}); err != nil {
		t.Fatal(err)
	}
	screen = &ptyScreen{raw: &poll.Output{}}
	go io.Copy(screen.raw, ptmx) // ends when ptmx closes
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("the screen (cursor on %q):\n%s", screen.input(), screen.dump())
		}
	})
	return ptmx, tty, screen
}

// ptyScreen is what a terminal shows for the bytes the client wrote to
// it: a small model of a terminal that knows what x/term's line editor
// sends (text, CR, LF, cursor moves ESC[nA/B/C/D, clear to the end of the
// line ESC[K). It keeps every line (no scrolling off the top).
type ptyScreen struct {
	raw *poll.Output
}

// render plays the output on an empty screen and returns its lines and
// the cursor's row.
func (s *ptyScreen) render() (lines [][]rune, row int) {
	lines = [][]rune{nil}
	col := 0
	out := []rune(s.raw.String())
	for i := 0; i < len(out); i++ {
		switch r := out[i]; {
		case r == '\r':
			col = 0
		case r == '\n':
			row++
		case r == 0x1b && i+1 < len(out) && out[i+1] == '[':
			j := i + 2
			for j < len(out) && (out[j] >= '0' && out[j] <= '9' || out[j] == ';' || out[j] == '?') {
				j++
			}
			if j == len(out) {
				return lines, row
			}
			n, err := strconv.Atoi(string(out[i+2 : j]))
			if err != nil {
				n = 1
			}
			switch out[j] {
			case 'A':
				row = max(0, row-n)
			case 'B':
				row += n
			case 'C':
				col += n
			case 'D':
				col = max(0, col-n)
			case 'K':
				if col < len(lines[row]) {
					lines[row] = lines[row][:col]
				}
			}
			i = j
		case r < ' ':
		default:
			for len(lines[row]) < col {
				lines[row] = append(lines[row], ' ')
			}
			if col < len(lines[row]) {
				lines[row][col] = r
			} else {
				lines[row] = append(lines[row], r)
			}
			col++
		}
		for len(lines) <= row {
			lines = append(lines, nil)
		}
	}
	return lines, row
}

// lines returns the screen's lines.
func (s *ptyScreen) lines() []string {
	rows, _ := s.render()
	out := make([]string, len(rows))
	for i, r := range rows {
		out[i] = string(r)
	}
	return out
}

// input returns the line the cursor is on: the prompt and what is typed.
func (s *ptyScreen) input() string {
	rows, row := s.render()
	return string(rows[row])
}

func (s *ptyScreen) dump() string { return strings.Join(s.lines(), "\n") }

// waitInput waits until the input line is want.
func (s *ptyScreen) waitInput(t *testing.T, want string) {
	t.Helper()
	s.wait(t, "input line "+strconv.Quote(want), func() bool { return s.input() == want })
}

// waitLine waits for a line that is want.
func (s *ptyScreen) waitLine(t *testing.T, want string) {
	t.Helper()
	s.wait(t, "line "+strconv.Quote(want), func() bool {
		for _, l := range s.lines() {
			if l == want {
				return true
			}
		}
		return false
	})
}

// waitLineEnding waits for a line "[hh:mm:ss] " + suffix, whole.
func (s *ptyScreen) waitLineEnding(t *testing.T, suffix string) {
	t.Helper()
	s.wait(t, "line ending "+strconv.Quote(suffix), func() bool {
		for _, l := range s.lines() {
			if strings.HasPrefix(l, "[") && strings.HasSuffix(l, "] "+suffix) && len(l) == len("[15:04:05] ")+len(suffix) {
				return true
			}
		}
		return false
	})
}

func (s *ptyScreen) wait(t *testing.T, what string, cond func() bool) {
	t.Helper()
	poll.WaitFor(t, 10*time.Second, "the screen to show the "+what, cond)
}

// Issue 11: on a terminal /login asks for the password without echo. The
// terminal is in raw mode for the line editor, so the password is read
// through it: nothing typed may reach the screen, nor the history of the
// input line, even when the login is cancelled half-typed.
func TestTerminalPassword(t *testing.T) {
	sys := startAccounts(t, nil)
	ptmx, tty, screen := openPTY(t)
	typeIn := func(s string) { ptmx.WriteString(s) }
	server := strings.TrimPrefix(sys.front, "tcp://")
	cfg := machine(t, sys, "")
	done := make(chan error, 1)
	go func() { done <- Run(t.Context(), cfg, tty, tty, clustertest.Log()) }()

	screen.waitInput(t, "["+server+" · sub ok] > ")
	typeIn("/login carol\r")
	screen.waitInput(t, "password for carol (empty: no account): ")
	typeIn("hunter2-secret\r")
	screen.waitLine(t, "*** logged in as carol (account claimed now)")
	screen.waitLine(t, "password for carol (empty: no account): ") // the prompt stays, without the password
	screen.waitInput(t, "[carol@"+server+" · sub ok] > ")

	// The password is not in the input line's history: Up brings back the /login.
	typeIn("\x1b[A")
	screen.waitInput(t, "[carol@"+server+" · sub ok] > /login carol")

	// A wrong password is refused by the server.
	typeIn("\r")
	screen.waitInput(t, "password for carol (empty: no account): ")
	typeIn("wrong-guess\r")
	screen.waitLine(t, `*** wrong password for "carol"`)

	// Ctrl-C at the prompt cancels the login; what was typed is gone.
	typeIn("/login carol\r")
	screen.waitInput(t, "password for carol (empty: no account): ")
	typeIn("half-typed\x03")
	screen.waitLine(t, "*** login cancelled")
	screen.waitInput(t, "[carol@"+server+" · sub ok] > ")
	typeIn("x")
	screen.waitInput(t, "[carol@"+server+" · sub ok] > x")
	typeIn("\x15/whoami\r")
	screen.waitLine(t, "*** you are carol; server "+sys.front+", in no channel")

	// So does Ctrl-D; it does not end the client as on the input line.
	typeIn("/login carol\r")
	screen.waitInput(t, "password for carol (empty: no account): ")
	typeIn("\x04")
	poll.WaitFor(t, 10*time.Second, "a second cancelled login", func() bool {
		return strings.Count(strings.Join(screen.lines(), "\n"), "*** login cancelled") == 2
	})
	screen.waitInput(t, "[carol@"+server+" · sub ok] > ")
	typeIn("/whoami\r")
	poll.WaitFor(t, 10*time.Second, "the client to go on", func() bool {
		return strings.Count(strings.Join(screen.lines(), "\n"), "*** you are carol") == 2
	})

	typeIn("\x04")
	if err := <-done; err != nil {
		t.Fatal(err)
	}

	// --user asks too, before the input line starts.
	cfg.User = "carol"
	go func() { done <- Run(t.Context(), cfg, tty, tty, clustertest.Log()) }()
	poll.WaitFor(t, 10*time.Second, "the prompt of --user", func() bool {
		return strings.Count(screen.raw.String(), "password for carol (empty: no account): ") == 5
	})
	typeIn("hunter2-secret\r")
	screen.waitLine(t, "*** logged in as carol (account)")
	typeIn("\x04")
	if err := <-done; err != nil {
		t.Fatal(err)
	}

	for _, typed := range []string{"hunter2", "wrong-guess", "half-typed"} {
		if strings.Contains(screen.raw.String(), typed) {
			t.Errorf("%q, typed at a password prompt, reached the screen", typed)
		}
	}
}
