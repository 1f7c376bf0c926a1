package client

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"

	"golang.org/x/term"
)

// terminal is the input line used when stdin and stdout are a terminal:
// golang.org/x/term's line editor (cursor keys, Home/End, word moves,
// history with Up/Down) with the status line as its prompt. Lines written
// through it appear above the input line, which is redrawn under them as
// it was, half-typed text and cursor included.
type terminal struct {
	line     *term.Terminal
	in, out  *os.File
	saved    *term.State // the terminal's mode before raw mode
	stopSize func()      // stops following the window size

	mu      sync.Mutex
	asking  bool   // a password is being read: its prompt stays as it is
	pending []byte // input translated by passwordKeys, not read yet
}

// openTerminal puts the terminal into raw mode and returns its line
// editor, or false when in or out is not a terminal (a pipe, a file): the
// client then reads plain lines, as a script expects.
func openTerminal(in io.Reader, out io.Writer) (*terminal, bool) {
	inFile, ok1 := in.(*os.File)
	outFile, ok2 := out.(*os.File)
	if !ok1 || !ok2 || !term.IsTerminal(int(inFile.Fd())) || !term.IsTerminal(int(outFile.Fd())) {
		return nil, false
	}
	saved, err := term.MakeRaw(int(inFile.Fd()))
	if err != nil {
		return nil, false
	}
	t := &terminal{in: inFile, out: outFile, saved: saved}
	t.line = term.NewTerminal(readWriter{passwordKeys{t}, outFile}, "> ")
	t.resize()
	t.stopSize = onResize(t.resize)
	return t, true
}

// readWriter joins the terminal's input and output for term.NewTerminal.
type readWriter struct {
	io.Reader
	io.Writer
}

// passwordKeys is the terminal's input as the line editor reads it.
// While a password is read, Ctrl-C and Ctrl-D cancel it: each becomes
// End, Ctrl-U (erase what was typed), cancelKey and Enter, so that
// ReadPassword returns cancelKey alone. x/term's own answer to them,
// io.EOF, would not do: it leaves the keys read with them in its buffer,
// and the next ReadLine would take them again, with echo.
type passwordKeys struct{ t *terminal }

const (
	ctrlC = 0x03
	ctrlD = 0x04
	ctrlE = 0x05 // End
	ctrlU = 0x15 // erase to the start of the line
	// cancelKey stands for Ctrl-C at a password prompt: a private-use
	// character, which no keyboard sends.
	cancelKey = "\ue000"
)

// cancelKeys is what Ctrl-C or Ctrl-D becomes at a password prompt.
var cancelKeys = []byte(string([]byte{ctrlE, ctrlU}) + cancelKey + "\r")

func (k passwordKeys) Read(p []byte) (int, error) {
	t := k.t // pending is only touched here, by the goroutine reading the terminal
	if len(t.pending) == 0 {
		n, err := t.in.Read(p)
		if err != nil || !t.readingPassword() || bytes.IndexAny(p[:n], "\x03\x04") < 0 {
			return n, err
		}
		for _, b := range p[:n] {
			if b == ctrlC || b == ctrlD {
				t.pending = append(t.pending, cancelKeys...)
			} else {
				t.pending = append(t.pending, b)
			}
		}
	}
	n := copy(p, t.pending)
	t.pending = t.pending[n:]
	return n, nil
}

// readingPassword reports whether a password is being read.
func (t *terminal) readingPassword() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.asking
}

// resize tells the line editor the window's width, which it needs to
// redraw an input line longer than one row.
func (t *terminal) resize() {
	if w, h, err := term.GetSize(int(t.out.Fd())); err == nil {
		t.line.SetSize(w, h)
	}
}

// close ends the input line and gives the terminal back its mode.
func (t *terminal) close() {
	t.stopSize()
	t.out.WriteString("\r\n") // leave the prompt's line
	term.Restore(int(t.in.Fd()), t.saved)
}

// setPrompt sets the prompt of the input line, unless a password is being
// read: its prompt then stays.
func (t *terminal) setPrompt(prompt string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.asking {
		t.line.SetPrompt(prompt)
	}
}

// readPassword shows prompt on the input line and reads a line without
// echo: nothing typed is shown, and it does not go into the history of
// the input line. Lines written meanwhile still appear above it. Ctrl-C
// or Ctrl-D cancels it (cancelled). Only the goroutine that reads the
// terminal may call it (readLines', or Run's before readLines starts).
func (t *terminal) readPassword(prompt string) (password string, cancelled bool, err error) {
	t.mu.Lock()
	t.asking = true
	t.mu.Unlock()
	defer func() {
		t.mu.Lock()
		t.asking = false
		t.mu.Unlock()
	}()
	password, err = t.line.ReadPassword(prompt)
	if err != nil || password == cancelKey {
		return "", password == cancelKey || err == io.EOF, err
	}
	return password, false, nil
}

// Write shows p above the input line (p holds whole lines).
func (t *terminal) Write(p []byte) (int, error) { return t.line.Write(p) }

// readLines sends the lines typed on the returned channel and closes it
// at Ctrl-D on an empty line, at Ctrl-C, or when the input fails. Before
// each line it sets the prompt from prompt(). When ask returns a prompt
// for a line (a /login), the next line is read as a password, without
// echo, and sent with it: this goroutine is the only reader of the
// terminal, so the password is read here, before anything typed after
// it. Like the plain reader, its goroutine may outlive Run while blocked
// in a read of the terminal.
func (t *terminal) readLines(ctx context.Context, prompt func() string, ask func(line string) string, log *slog.Logger) <-chan inputLine {
	lines := make(chan inputLine)
	go func() {
		defer close(lines)
		for {
			t.setPrompt(prompt())
			text, err := t.line.ReadLine()
			if err != nil && !errors.Is(err, term.ErrPasteIndicator) {
				if err != io.EOF {
					log.Error("reading input stopped", "err", err)
				}
				return
			}
			line := inputLine{text: strings.TrimRight(text, "\r\n")}
			if p := ask(line.text); p != "" {
				line.asked = true
				line.password, line.cancelled = t.askPassword(p, log)
			}
			select {
			case lines <- line:
			case <-ctx.Done():
				return
			}
		}
	}()
	return lines
}

// askPassword reads a password at prompt. Ctrl-C or Ctrl-D cancels the
// login (cancelled), and so does an input that fails.
func (t *terminal) askPassword(prompt string, log *slog.Logger) (password string, cancelled bool) {
	password, cancelled, err := t.readPassword(prompt)
	if err != nil && err != io.EOF {
		log.Error("reading the password failed", "err", err)
	}
	return password, cancelled || err != nil
}

// logAbove returns log or, when stderr is a terminal too (the usual case
// for an interactive client), a logger with log's levels whose records
// are written as text lines above the input line: in raw mode a line
// written straight to the terminal would not start at the left margin,
// and would be drawn over by the input line.
func logAbove(log *slog.Logger, p *printer) *slog.Logger {
	if !term.IsTerminal(int(os.Stderr.Fd())) {
		return log
	}
	text := slog.NewTextHandler(lineWriter{p}, &slog.HandlerOptions{Level: slog.Level(-100)}) // levels decides
	return slog.New(aboveHandler{levels: log.Handler(), text: text})
}

// aboveHandler writes the records that levels would take with text.
type aboveHandler struct {
	levels slog.Handler // decides which records are logged
	text   slog.Handler // formats them
}

func (h aboveHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return h.levels.Enabled(ctx, l)
}

func (h aboveHandler) Handle(ctx context.Context, r slog.Record) error {
	return h.text.Handle(ctx, r)
}

func (h aboveHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return aboveHandler{levels: h.levels, text: h.text.WithAttrs(attrs)}
}

func (h aboveHandler) WithGroup(name string) slog.Handler {
	return aboveHandler{levels: h.levels, text: h.text.WithGroup(name)}
}

// lineWriter shows what a text handler writes, one record a line.
type lineWriter struct{ p *printer }

func (w lineWriter) Write(b []byte) (int, error) {
	w.p.lines(strings.TrimSuffix(string(b), "\n"))
	return len(b), nil
}
