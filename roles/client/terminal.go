package client

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"strings"

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
	t := &terminal{
		line:  term.NewTerminal(readWriter{inFile, outFile}, "> "),
		in:    inFile,
		out:   outFile,
		saved: saved,
	}
	t.resize()
	t.stopSize = onResize(t.resize)
	return t, true
}

// readWriter joins the terminal's input and output for term.NewTerminal.
type readWriter struct {
	io.Reader
	io.Writer
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

// Write shows p above the input line (p holds whole lines).
func (t *terminal) Write(p []byte) (int, error) { return t.line.Write(p) }

// readLines sends the lines typed on the returned channel and closes it
// at Ctrl-D on an empty line, at Ctrl-C, or when the input fails. Before
// each line it sets the prompt from prompt(). Like the plain reader, its
// goroutine may outlive Run while blocked in a read of the terminal.
func (t *terminal) readLines(ctx context.Context, prompt func() string, log *slog.Logger) <-chan inputLine {
	lines := make(chan inputLine)
	go func() {
		defer close(lines)
		for {
			t.line.SetPrompt(prompt())
			text, err := t.line.ReadLine()
			if err != nil && !errors.Is(err, term.ErrPasteIndicator) {
				if err != io.EOF {
					log.Error("reading input stopped", "err", err)
				}
				return
			}
			select {
			case lines <- inputLine{text: strings.TrimRight(text, "\r\n")}:
			case <-ctx.Done():
				return
			}
		}
	}()
	return lines
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
