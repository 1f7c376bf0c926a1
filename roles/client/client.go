// Package client is the interactive chat client: an IRC-like command line
// (/login, /join, /msg, ...) over the request services of the standard,
// with channel posts and direct messages shown as they arrive from the
// broker's publish-subscribe proxy.
//
// client.go holds the configuration and the input loop, terminal.go the
// input line and status line used on a terminal (status.go), session.go
// the commands, login.go accounts (password, token, logging in again),
// private.go private direct messages (sealed end to end, and marked),
// feed.go which posts are shown (each once, in order, with
// those missed while away from the broker fetched from history),
// subscriber.go the Subscriber (the bots use it too), request.go the
// request helper Call, and format.go how messages look.
package client

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"chat/proto"
	"chat/transport"
)

// Config configures the client. Every timeout is here.
type Config struct {
	Servers        []string      // request endpoints, tried in turn (--server)
	Sub            string        // the broker's pub-out endpoint (--sub); "" receives nothing
	User           string        // log in as this user at start (--user); optional
	RequestTimeout time.Duration // how long one attempt waits for its reply
	Attempts       int           // tries per request, over all servers
	HistoryOnJoin  int           // messages shown on /join (0: none)
	DialTimeout    time.Duration // bound on connecting to one server
	BusyRetries    int           // resends of a request the broker could not place ("retry": true)
	BusyBackoff    time.Duration // pause before the first such resend; it doubles each time, up to 1s
	ReconnectDelay time.Duration // pause before re-dialing the broker after losing its publications
	CatchUpLimit   int           // posts per channel fetched from history after a reconnect, at most

	// Password is the password of every /login (--password-file or
	// CHAT_PASSWORD). "" : on a terminal /login asks for it, without
	// echo; elsewhere it logs in without one (an open name).
	Password string
	// KeyDir holds the key pairs of private direct messages, one file per
	// user (--config-dir + "/keys"); "" : privatedm.DefaultDir().
	KeyDir string
}

// DefaultConfig returns the defaults of the command line.
func DefaultConfig() Config {
	return Config{
		Servers:        []string{"tcp://localhost:5555"},
		Sub:            "tcp://localhost:5558",
		RequestTimeout: 3 * time.Second,
		Attempts:       3,
		HistoryOnJoin:  20,
		DialTimeout:    2 * time.Second,
		BusyRetries:    8, // with backoff capped at 1s: ~5s, longer than a failover
		BusyBackoff:    200 * time.Millisecond,
		ReconnectDelay: 500 * time.Millisecond,
		CatchUpLimit:   500,
	}
}

// Validate reports a config that cannot work.
func (c Config) Validate() error {
	switch {
	case len(c.Servers) == 0:
		return errors.New("client: a server endpoint is required (--server)")
	case c.User != "" && proto.ValidName(c.User, proto.DefaultLimits().MaxName) != nil:
		return fmt.Errorf("client: bad user name: %v", proto.ValidName(c.User, proto.DefaultLimits().MaxName))
	case c.RequestTimeout <= 0 || c.DialTimeout <= 0:
		return errors.New("client: timeouts must be positive")
	case c.Attempts < 1:
		return errors.New("client: attempts must be at least 1")
	case c.HistoryOnJoin < 0 || c.BusyRetries < 0 || c.BusyBackoff < 0:
		return errors.New("client: history on join, busy retries and busy backoff must not be negative")
	case c.ReconnectDelay <= 0:
		return errors.New("client: reconnect delay must be positive")
	case c.CatchUpLimit < 1:
		return errors.New("client: the catch-up limit must be at least 1")
	}
	for _, ep := range c.Servers {
		if ep == "" {
			return errors.New("client: empty server endpoint in --server")
		}
	}
	return nil
}

// Run reads commands from in until EOF, /quit or ctx ends, writing
// everything the user sees to out. When in and out are a terminal, it
// gives them an input line with a status line in its prompt (terminal.go)
// and restores the terminal when it returns; otherwise it reads plain
// lines, so that pipes and scripts work. At EOF (Ctrl-D or Ctrl-C on a
// terminal) it finishes the current command and returns; messages still
// on their way are not waited for. It returns nil on every one of these
// stops, and an error only for a bad config.
func Run(ctx context.Context, cfg Config, in io.Reader, out io.Writer, log *slog.Logger) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // stops the line reader if it is handing over a line

	st := newStatus(subNone)
	if cfg.Sub != "" {
		st.sub = subConnecting
	}
	p := &printer{w: out}
	tty, isTerminal := openTerminal(in, out)
	if isTerminal {
		defer tty.close() // last: after the subscriber has stopped writing
		p.term, p.prompt = tty, st.prompt
		log = logAbove(log, p)
	}
	s := newSession(ctx, cfg, p, st, log)
	defer s.close()
	s.notice("type /help for the commands")
	if cfg.Sub != "" {
		// A SUB socket gives no sign when nothing answers: say so once.
		if err := transport.Probe(ctx, cfg.Sub, cfg.DialTimeout); err != nil {
			s.notice("%v: posts and direct messages will not show until the broker's publish-out answers there (--sub)", err)
		}
	}
	// On a terminal without a password given, /login asks for one.
	ask := func(line string) string {
		if cmd, err := parseCommand(line); err == nil && cmd.name == "login" && cfg.Password == "" {
			return passwordPrompt(cmd.arg)
		}
		return ""
	}
	if cfg.User != "" {
		login := command{name: "login", arg: cfg.User}
		if isTerminal && cfg.Password == "" { // no line reader yet: Run's goroutine may read the terminal
			login.asked = true
			login.password, login.cancelled = tty.askPassword(passwordPrompt(cfg.User), log)
		}
		s.execute(ctx, login)
	}

	var lines <-chan inputLine
	if isTerminal {
		lines = tty.readLines(ctx, st.prompt, ask, log)
	} else {
		lines = readLines(ctx, in, log)
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-s.reconnected:
			s.catchUp(ctx)
		case line, ok := <-lines:
			if !ok {
				return nil
			}
			if line.tooLong > 0 {
				s.notice("line not used: it is %d bytes, the limit is %d bytes", line.tooLong, maxLine)
				continue
			}
			cmd, err := parseCommand(line.text)
			cmd.asked, cmd.password, cmd.cancelled = line.asked, line.password, line.cancelled
			switch {
			case err != nil:
				s.notice("%v", err)
			case cmd.name == "quit":
				return nil
			default:
				s.execute(ctx, cmd)
			}
		}
	}
}

// maxLine is the longest input line taken, in bytes (without its end of
// line): the largest request frame of the standard. A longer line is
// refused, with a notice, and the lines after it are read as usual.
const maxLine = 64 << 10

// inputLine is one line of input, or the length of one too long to take.
type inputLine struct {
	text    string
	tooLong int // > 0: the line had this many bytes, over maxLine; text is empty

	// A /login on a terminal: the password typed after it (asked), or
	// Ctrl-C at its prompt (cancelled).
	asked, cancelled bool
	password         string
}

// passwordPrompt is what /login NAME asks on a terminal.
func passwordPrompt(name string) string {
	return "password for " + printable(name) + " (empty: no account): "
}

// readLines sends the lines of in on the returned channel and closes it at
// EOF. Its goroutine ends at EOF or when ctx ends, except while it is
// blocked in in.Read: a read of a terminal cannot be interrupted, so then
// it ends at the next line or EOF, touching nothing else. Run therefore
// does not wait for it.
func readLines(ctx context.Context, in io.Reader, log *slog.Logger) <-chan inputLine {
	lines := make(chan inputLine)
	go func() {
		defer close(lines)
		r := bufio.NewReaderSize(in, 64<<10)
		for {
			line, err := readLine(r, maxLine)
			if err == nil || line.text != "" || line.tooLong > 0 {
				select {
				case lines <- line:
				case <-ctx.Done():
					return
				}
			}
			if err != nil {
				if err != io.EOF {
					log.Error("reading input stopped", "err", err)
				}
				return
			}
		}
	}()
	return lines
}

// readLine reads one line without its "\n" or "\r\n". A line longer than
// max bytes is read to its end and dropped (only its length is returned),
// so memory stays bounded. At the end of the input it returns io.EOF,
// with the last line if it had no end of line.
func readLine(r *bufio.Reader, max int) (inputLine, error) {
	var buf []byte
	size, over := 0, false
	var before byte // the byte before the current chunk
	for {
		chunk, err := r.ReadSlice('\n')
		if err == nil { // the end of the line: drop "\n" or "\r\n"
			chunk = chunk[:len(chunk)-1]
			if n := len(chunk); n > 0 && chunk[n-1] == '\r' {
				chunk = chunk[:n-1]
			} else if n == 0 && before == '\r' {
				size--
				if !over {
					buf = buf[:len(buf)-1]
				}
			}
		}
		if len(chunk) > 0 {
			before = chunk[len(chunk)-1]
		}
		size += len(chunk)
		if !over && size > max+1 { // room for a "\r" whose "\n" is still to come
			over, buf = true, nil
		}
		if !over {
			buf = append(buf, chunk...)
		}
		if err == bufio.ErrBufferFull {
			continue
		}
		if over || len(buf) > max {
			return inputLine{tooLong: size}, err
		}
		return inputLine{text: string(buf)}, err
	}
}
