package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"chat/clock"
	"chat/logging"
	"chat/proto"
	"chat/transport"
)

// errNoLogin is the answer to a command that needs a user.
var errNoLogin = errors.New("log in first: /login NAME")

// session is the state of one running client. Only Run's goroutine
// touches it, except out and lamport, which the subscriber's goroutine
// also uses (both are safe for concurrent use).
type session struct {
	cfg     Config
	log     *slog.Logger
	out     *printer
	lamport clock.Lamport
	servers []endpoint  // one request client per server
	cur     int         // index of the server requests go to first
	sub     *Subscriber // nil when there is no pub-out endpoint

	user   string   // "" until /login
	joined []string // channels joined; the last one is the current channel
}

// endpoint is one server's request endpoint with its own REQ client.
type endpoint struct {
	addr string
	req  *transport.Client
}

// newSession prepares a request client per server (they connect on first
// use) and starts the subscriber.
func newSession(ctx context.Context, cfg Config, out io.Writer, log *slog.Logger) *session {
	s := &session{cfg: cfg, out: &printer{w: out}}
	s.log = logging.WithClock(log, &s.lamport) // every line shows the client's Lamport clock
	log = s.log
	for _, ep := range cfg.Servers {
		// One attempt per call: the session moves on to the next server
		// itself, so that it can tell the user.
		req, err := transport.NewClient(transport.ClientConfig{
			Endpoints: []string{ep}, Timeout: cfg.RequestTimeout, Attempts: 1, DialTimeout: cfg.DialTimeout,
		}, log)
		if err != nil {
			panic(err) // cannot happen: Config.Validate checked every field
		}
		s.servers = append(s.servers, endpoint{addr: ep, req: req})
	}
	if cfg.Sub != "" {
		s.sub = NewSubscriber(ctx, SubscriberConfig{Endpoint: cfg.Sub, ReconnectDelay: cfg.ReconnectDelay}, s.incoming, log)
	}
	return s
}

// close stops the subscriber and closes the request sockets.
func (s *session) close() {
	if s.sub != nil {
		s.sub.Close()
	}
	for _, srv := range s.servers {
		srv.req.Close()
	}
}

// incoming shows a publication as it arrives (subscriber goroutine).
// Direct messages arrive on the user's own topic, so they are all to us.
func (s *session) incoming(r proto.Received) {
	s.lamport.Observe(r.Clock)
	switch {
	case r.Post != nil:
		s.out.lines(formatPost(*r.Post))
	case r.Direct != nil:
		s.out.lines(formatDirect(*r.Direct, ""))
	}
}

// execute runs one command and shows its outcome.
func (s *session) execute(ctx context.Context, cmd command) {
	var err error
	switch cmd.name {
	case "help":
		s.out.lines(helpLines()...)
	case "login":
		err = s.login(ctx, cmd.arg)
	case "users":
		err = s.list(ctx, proto.Users, "users", "users")
	case "channels":
		err = s.list(ctx, proto.Channels, "channels", "channels", "users")
	case "create":
		err = s.create(ctx, cmd.arg)
	case "join":
		err = s.join(ctx, cmd.arg)
	case "leave":
		err = s.leave(cmd.arg)
	case "msg":
		err = s.direct(ctx, cmd.arg, cmd.text)
	case "history":
		err = s.history(ctx, cmd.arg)
	case "say":
		err = s.say(ctx, cmd.text)
	}
	if err != nil && ctx.Err() == nil {
		s.notice("%v", err)
	}
}

func (s *session) login(ctx context.Context, name string) error {
	if _, err := s.request(ctx, proto.Login, proto.Data{"user": name}); err != nil {
		return err
	}
	old := s.user
	s.user = name
	s.follow(name) // direct messages to name
	s.unfollow(old)
	s.notice("logged in as %s", name)
	return nil
}

// list shows a list reply; keys are where the reply may hold the list.
func (s *session) list(ctx context.Context, service, what string, keys ...string) error {
	reply, err := s.request(ctx, service, proto.Data{})
	if err != nil {
		return err
	}
	s.notice("%s", formatList(what, ReplyList(reply, keys...)))
	return nil
}

func (s *session) create(ctx context.Context, ch string) error {
	if _, err := s.request(ctx, proto.Channel, proto.Data{"channel": ch}); err != nil {
		return err
	}
	s.notice("channel #%s created", ch)
	return nil
}

// join subscribes to an existing channel, makes it current and shows its
// recent messages.
func (s *session) join(ctx context.Context, ch string) error {
	reply, err := s.request(ctx, proto.Channels, proto.Data{})
	if err != nil {
		return err
	}
	if !slices.Contains(ReplyList(reply, "channels", "users"), ch) {
		return fmt.Errorf("there is no channel #%s (create it with /create %s)", ch, ch)
	}
	s.follow(ch)
	s.joined = append(slices.DeleteFunc(s.joined, func(c string) bool { return c == ch }), ch)
	s.notice("joined #%s", ch)
	if s.cfg.HistoryOnJoin == 0 {
		return nil
	}
	return s.showHistory(ctx, proto.Data{"channel": ch, "limit": s.cfg.HistoryOnJoin}, "#"+ch)
}

func (s *session) leave(ch string) error {
	if !slices.Contains(s.joined, ch) {
		return fmt.Errorf("you are not in #%s", ch)
	}
	s.joined = slices.DeleteFunc(s.joined, func(c string) bool { return c == ch })
	s.unfollow(ch)
	s.notice("left #%s", ch)
	if cur := s.current(); cur != "" {
		s.notice("now talking in #%s", cur)
	}
	return nil
}

// direct sends a direct message and shows it as sent.
func (s *session) direct(ctx context.Context, to, text string) error {
	if s.user == "" {
		return errNoLogin
	}
	if _, err := s.request(ctx, proto.Message, proto.Data{"src": s.user, "dst": to, "message": text}); err != nil {
		return err
	}
	if to == s.user && s.sub != nil {
		// It comes back on the user's own topic, and is shown then (as
		// a post is): showing it now too would show it twice.
		return nil
	}
	s.out.lines(formatDirect(proto.Direct{From: s.user, To: to, Text: text, Timestamp: time.Now()}, s.user))
	return nil
}

// history shows the messages of a channel (default: the current one) or,
// for "@USER", of the conversation with USER.
func (s *session) history(ctx context.Context, arg string) error {
	if peer, ok := strings.CutPrefix(arg, "@"); ok {
		if s.user == "" {
			return errNoLogin
		}
		return s.showHistory(ctx, proto.Data{"user": s.user, "peer": peer}, "your conversation with "+peer)
	}
	ch := arg
	if ch == "" {
		ch = s.current()
	}
	if ch == "" {
		return errors.New("join a channel first, or name one: /history CH")
	}
	return s.showHistory(ctx, proto.Data{"channel": ch}, "#"+ch)
}

// showHistory asks for a history and shows it; where names it for the
// user.
func (s *session) showHistory(ctx context.Context, query proto.Data, where string) error {
	reply, err := s.request(ctx, proto.History, query)
	if err != nil {
		return fmt.Errorf("history of %s: %w", where, err)
	}
	ch, _, _ := query.String("", "channel")
	lines := historyLines(reply, ch, s.user)
	if len(lines) == 0 {
		s.notice("no messages in %s yet", where)
		return nil
	}
	s.out.lines(lines...)
	return nil
}

// say posts text to the current channel. The post is shown when it comes
// back from the broker, as everyone else sees it.
func (s *session) say(ctx context.Context, text string) error {
	ch := s.current()
	switch {
	case s.user == "":
		return errNoLogin
	case ch == "":
		return errors.New("join a channel first: /join CH")
	}
	if _, err := s.request(ctx, proto.Publish, proto.Data{"user": s.user, "channel": ch, "message": text}); err != nil {
		return err
	}
	if s.sub == nil { // nothing comes back without a subscription: show it now
		s.out.lines(formatPost(proto.Post{Channel: ch, User: s.user, Text: text, Timestamp: time.Now()}))
	}
	return nil
}

// current returns the current channel: the last one joined ("" if none).
func (s *session) current() string {
	if len(s.joined) == 0 {
		return ""
	}
	return s.joined[len(s.joined)-1]
}

// follow subscribes to topic.
func (s *session) follow(topic string) {
	if s.sub != nil {
		s.sub.Subscribe(topic)
	}
}

// unfollow unsubscribes from topic unless it is still wanted: the user's
// own name or a joined channel (a channel may share a user's name).
func (s *session) unfollow(topic string) {
	if s.sub == nil || topic == "" || topic == s.user || slices.Contains(s.joined, topic) {
		return
	}
	s.sub.Unsubscribe(topic)
}

// request sends one request and returns the reply's data. When a server
// does not answer, the next one is tried (cfg.Attempts tries in all);
// when the broker could not place the request ("retry": true), it is sent
// again after a pause (cfg.BusyRetries times). A state-changing request
// carries a request_id, the same in every try, so it is applied once.
func (s *session) request(ctx context.Context, service string, data proto.Data) (proto.Data, error) {
	if changesState(service) {
		data["request_id"] = NewRequestID()
	}
	tries, busy, backoff := 0, 0, s.cfg.BusyBackoff
	for {
		srv := s.servers[s.cur]
		reply, err := Call(ctx, srv.req, &s.lamport, service, data)
		var refused *ReplyError
		switch {
		case errors.Is(err, transport.ErrNoReply):
			s.log.Debug("no reply", "server", srv.addr, "err", err)
			if tries++; tries >= s.cfg.Attempts {
				return nil, fmt.Errorf("no server answered (%d tries); is the server running?", tries)
			}
			s.cur = (s.cur + 1) % len(s.servers)
			if next := s.servers[s.cur].addr; next != srv.addr {
				s.notice("server %s did not answer, trying %s", srv.addr, next)
			} else {
				s.notice("server %s did not answer, trying again", srv.addr)
			}
		case errors.As(err, &refused) && refused.Retry && busy < s.cfg.BusyRetries:
			busy++
			s.log.Debug("broker asks to retry", "service", service, "why", refused.Text, "in", backoff)
			select {
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, time.Second)
		default:
			return reply, err
		}
	}
}

// changesState reports whether service changes the server's state, so that
// its requests carry a request_id.
func changesState(service string) bool {
	switch service {
	case proto.Login, proto.Channel, proto.Publish, proto.Message:
		return true
	}
	return false
}

// notice shows a line from the client itself, marked "***".
func (s *session) notice(format string, args ...any) {
	s.out.lines(noticeLine(format, args...))
}

// noticeLine formats a line from the client itself. Its arguments may
// come from other users or the server (names, error texts), so it is made
// printable as a whole.
func noticeLine(format string, args ...any) string {
	return "*** " + printable(fmt.Sprintf(format, args...))
}

// printer serialises what the user sees: command output and incoming
// messages are written by two goroutines.
type printer struct {
	mu sync.Mutex
	w  io.Writer
}

// lines writes each line, all of them together. Every line is made
// printable here too, whatever built it: nothing reaches the terminal
// unescaped.
func (p *printer) lines(lines ...string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, l := range lines {
		fmt.Fprintln(p.w, printable(l))
	}
}
