package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"chat/clock"
	"chat/logging"
	"chat/privatedm"
	"chat/proto"
	"chat/transport"
)

// errNoLogin is the answer to a command that needs a user.
var errNoLogin = errors.New("log in first: /login NAME")

// session is the state of one running client. Only Run's goroutine
// touches it, except out, lamport, feed, status, reconnected, cur and
// peerKeys, which the subscriber's goroutine also uses (all are safe for
// concurrent use), user and pair, which Run's goroutine writes under mu
// and the subscriber's reads under mu (identity), and connected, which
// only the subscriber's goroutine uses. The subscriber's goroutine sends
// requests too: whois, for the key that opens a private direct message.
type session struct {
	ctx     context.Context // the session's; ends at close
	stop    context.CancelFunc
	cfg     Config
	log     *slog.Logger
	out     *printer
	lamport clock.Lamport
	servers []endpoint   // one request client per server
	cur     atomic.Int32 // index of the server requests go to first
	sub     *Subscriber  // nil when there is no pub-out endpoint
	feed    *feed        // which channel posts are shown
	status  *status      // what the status line shows
	// peerKeys holds the public keys of other users, from whois (private.go).
	peerKeys keyCache

	// reconnected tells Run's goroutine that the subscriber is back after
	// losing the broker, so that it fetches what was missed meanwhile.
	reconnected chan struct{}
	connected   bool // the subscriber has connected at least once

	mu   sync.Mutex
	user string             // "" until /login
	pair *privatedm.KeyPair // the user's key pair; nil without a password login

	// The account (login.go): the token of the login, "" for an open
	// name, and its password, kept to log in again by itself.
	token, password string
	warnedNoPair    bool // told that DMs sent without a key pair are not private

	joined  []string // channels joined, in the order joined
	channel string   // the current channel, one of joined ("" if none)
}

// endpoint is one server's request endpoint with its own REQ client.
type endpoint struct {
	addr string
	req  *transport.Client
}

// newSession prepares a request client per server (they connect on first
// use) and starts the subscriber.
func newSession(ctx context.Context, cfg Config, out *printer, st *status, log *slog.Logger) *session {
	s := &session{cfg: cfg, out: out, status: st, reconnected: make(chan struct{}, 1)}
	s.ctx, s.stop = context.WithCancel(ctx)
	ctx = s.ctx
	s.log = logging.WithClock(log, &s.lamport) // every line shows the client's Lamport clock
	log = s.log
	s.feed = newFeed(s.showPost)
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
		s.sub = NewSubscriber(ctx, SubscriberConfig{Endpoint: cfg.Sub, ReconnectDelay: cfg.ReconnectDelay, State: s.subState}, s.incoming, log)
	}
	s.refresh()
	return s
}

// close stops the subscriber and closes the request sockets.
func (s *session) close() {
	s.stop()
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
		s.feed.live(*r.Post)
	case r.Direct != nil:
		user, pair := s.identity()
		s.out.lines(s.directLine(s.ctx, *r.Direct, user, pair))
	}
}

// showPost shows a channel post the feed lets through, and counts it as
// unread if its channel is not the current one.
func (s *session) showPost(p proto.Post) {
	s.status.posted(p.Channel)
	s.out.lines(formatPost(p))
}

// subState is told by the subscriber (in its goroutine) that the broker
// was reached or lost. Each change is shown once; when the broker is back
// after a loss, Run's goroutine is asked to fetch what was missed.
func (s *session) subState(connected bool) {
	if !connected {
		s.feed.lost()
		s.status.setSub(subLost)
		s.notice("lost the broker's publications (%s); reconnecting", s.cfg.Sub)
		return
	}
	s.status.setSub(subOK)
	if !s.connected { // the first connection: nothing was missed
		s.connected = true
		s.out.refresh()
		return
	}
	s.notice("back: receiving the broker's publications again")
	select {
	case s.reconnected <- struct{}{}:
	default: // a catch-up is already due
	}
}

// catchUp shows, for each joined channel, the posts published while the
// client was away from the broker, fetched from history, then the live
// posts held meanwhile.
func (s *session) catchUp(ctx context.Context) {
	losses := s.feed.lossCount()
	defer s.feed.caughtUp(losses)
	missed := 0
	for _, ch := range s.joined {
		posts, cut, err := s.missed(ctx, ch, s.feed.lastID(ch))
		if err != nil {
			if ctx.Err() == nil {
				s.notice("could not fetch the posts of #%s missed while away: %v", ch, err)
			}
			continue
		}
		if cut {
			s.notice("more than %d posts of #%s were missed; the older ones are in /history %s", s.cfg.CatchUpLimit, ch, ch)
		}
		missed += s.feed.fetched(posts)
	}
	if missed > 0 {
		s.notice("caught up: %d posts missed while away", missed)
	}
}

// missed returns the posts of channel with an id above after, oldest
// first: the newest cfg.CatchUpLimit of them (cut says that older ones
// were left out). history pages backwards from the newest post, so pages
// are fetched until one reaches after, or the oldest post, or the limit.
func (s *session) missed(ctx context.Context, channel string, after int64) (posts []proto.Post, cut bool, err error) {
	var before int64
	for {
		// One more than the limit, to tell whether older ones were missed.
		query := proto.Data{"channel": channel, "limit": s.cfg.CatchUpLimit + 1}
		if before > 0 {
			query["before"] = before
		}
		reply, err := s.request(ctx, proto.History, query)
		if err != nil {
			return nil, false, err
		}
		page := historyPosts(reply, channel)
		var newer []proto.Post
		reached := len(page) == 0
		for _, p := range page {
			if p.ID > after {
				newer = append(newer, p)
			} else {
				reached = true
			}
		}
		posts = append(newer, posts...)
		more, _ := reply["more"].(bool)
		if len(posts) > s.cfg.CatchUpLimit {
			return posts[len(posts)-s.cfg.CatchUpLimit:], true, nil
		}
		if reached || !more {
			return posts, false, nil
		}
		before = page[0].ID
	}
}

// execute runs one command and shows its outcome.
func (s *session) execute(ctx context.Context, cmd command) {
	var err error
	switch cmd.name {
	case "help":
		s.out.lines(helpLines()...)
	case "login":
		err = s.loginCommand(ctx, cmd)
	case "logout":
		err = s.logout(ctx)
	case "whois":
		err = s.whois(ctx, cmd.arg)
	case "users":
		err = s.list(ctx, proto.Users, "users", "users")
	case "channels":
		err = s.list(ctx, proto.Channels, "channels", "channels", "users")
	case "create":
		err = s.create(ctx, channelName(cmd.arg))
	case "join":
		err = s.join(ctx, channelName(cmd.arg))
	case "leave":
		err = s.leave(channelName(cmd.arg))
	case "window":
		err = s.window(channelName(cmd.arg))
	case "me":
		err = s.say(ctx, actionText(s.user, cmd.text))
	case "whoami":
		s.whoami()
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
	s.refresh()
}

// refresh tells the status line the session's state.
func (s *session) refresh() {
	s.status.setSession(s.user, s.server(), s.joined, s.channel)
	s.out.refresh()
}

// channelName is a channel as typed, without the "#" IRC users put in
// front of it: "#geral" and "geral" are the same channel.
func channelName(arg string) string {
	return strings.TrimPrefix(arg, "#")
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

// join subscribes to a channel, creating it first if it does not exist
// (as IRC does), makes it current and shows its recent messages. Live
// posts wait until those are shown, so none is shown twice or out of
// order.
func (s *session) join(ctx context.Context, ch string) error {
	reply, err := s.request(ctx, proto.Channels, proto.Data{})
	if err != nil {
		return err
	}
	if !slices.Contains(ReplyList(reply, "channels", "users"), ch) {
		if err := s.create(ctx, ch); err != nil {
			return err
		}
	}
	s.feed.startJoin()
	defer s.feed.endJoin()
	s.follow(ch)
	if !slices.Contains(s.joined, ch) {
		s.joined = append(s.joined, ch)
	}
	s.channel = ch
	s.notice("joined #%s", ch)
	return s.joinHistory(ctx, ch)
}

// joinHistory shows the channel's last cfg.HistoryOnJoin posts and
// records the newest id, from which a catch-up after a reconnect starts.
// (With HistoryOnJoin 0 it asks for one post and shows none.)
func (s *session) joinHistory(ctx context.Context, ch string) error {
	reply, err := s.request(ctx, proto.History, proto.Data{"channel": ch, "limit": max(s.cfg.HistoryOnJoin, 1)})
	if err != nil {
		return fmt.Errorf("history of #%s: %w", ch, err)
	}
	for _, p := range historyPosts(reply, ch) {
		s.feed.mark(ch, p.ID)
	}
	if s.cfg.HistoryOnJoin > 0 {
		s.printHistory(ctx, reply, ch, "#"+ch)
	}
	return nil
}

// leave unsubscribes from ch (default: the current channel). If it was
// current, the last channel joined of those left becomes current.
func (s *session) leave(ch string) error {
	if ch == "" {
		ch = s.channel
	}
	switch {
	case ch == "":
		return errors.New("you are in no channel")
	case !slices.Contains(s.joined, ch):
		return fmt.Errorf("you are not in #%s", ch)
	}
	s.joined = slices.DeleteFunc(s.joined, func(c string) bool { return c == ch })
	if s.channel == ch {
		s.channel = ""
		if n := len(s.joined); n > 0 {
			s.channel = s.joined[n-1]
		}
	}
	s.unfollow(ch)
	s.notice("left #%s", ch)
	if cur := s.current(); cur != "" {
		s.notice("now talking in #%s", cur)
	}
	return nil
}

// window makes a joined channel current: by name, or by its number in
// the order joined (1 is the first). Without an argument it lists the
// joined channels with their numbers and unread counts.
func (s *session) window(arg string) error {
	if arg == "" {
		if len(s.joined) == 0 {
			return errors.New("you are in no channel")
		}
		var list []string
		for i, ch := range s.joined {
			item := fmt.Sprintf("%d:#%s", i+1, ch)
			if ch == s.channel {
				item += " (current)"
			} else if n := s.status.unreadIn(ch); n > 0 {
				item += fmt.Sprintf(" (%d unread)", n)
			}
			list = append(list, item)
		}
		s.notice("windows: %s", strings.Join(list, ", "))
		return nil
	}
	ch := arg
	if n, err := strconv.Atoi(arg); err == nil {
		if n < 1 || n > len(s.joined) {
			return fmt.Errorf("no window %d: you are in %d channels (/window lists them)", n, len(s.joined))
		}
		ch = s.joined[n-1]
	}
	if !slices.Contains(s.joined, ch) {
		return fmt.Errorf("you are not in #%s (/join %s)", ch, ch)
	}
	s.channel = ch
	s.notice("now talking in #%s", ch)
	return nil
}

// whoami tells the user who they are, on which server, in which channel.
func (s *session) whoami() {
	where := "in no channel"
	if s.channel != "" {
		where = "talking in #" + s.channel
	}
	if s.user == "" {
		s.notice("you are not logged in (/login NAME); server %s, %s", s.server(), where)
		return
	}
	s.notice("you are %s; server %s, %s", s.user, s.server(), where)
}

// direct sends a direct message, sealed when it can be (private.go),
// and shows it as sent.
func (s *session) direct(ctx context.Context, to, text string) error {
	if s.user == "" {
		return errNoLogin
	}
	sent, mark, err := s.sealFor(ctx, to, text)
	if err != nil {
		return err
	}
	if _, err := s.requestAs(ctx, proto.Message, proto.Data{"src": s.user, "dst": to, "message": sent}); err != nil {
		return err
	}
	if to == s.user && s.sub != nil {
		// It comes back on the user's own topic, and is shown then (as
		// a post is): showing it now too would show it twice.
		return nil
	}
	s.out.lines(formatDirect(proto.Direct{From: s.user, To: to, Text: text, Timestamp: time.Now()}, s.user, mark))
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
	ch := channelName(arg)
	if ch == "" {
		ch = s.current()
	}
	if ch == "" {
		return errors.New("join a channel first, or name one: /history CH")
	}
	return s.showHistory(ctx, proto.Data{"channel": ch}, "#"+ch)
}

// showHistory asks for a history and shows it; where names it for the
// user. The history of a conversation acts as the user (with the token).
func (s *session) showHistory(ctx context.Context, query proto.Data, where string) error {
	request := s.request
	if _, ok := query["peer"]; ok {
		request = s.requestAs
	}
	reply, err := request(ctx, proto.History, query)
	if err != nil {
		return fmt.Errorf("history of %s: %w", where, err)
	}
	ch, _, _ := query.String("", "channel")
	s.printHistory(ctx, reply, ch, where)
	return nil
}

// printHistory shows the posts of a history reply of channel ch ("": of
// a conversation), or says that where has none yet.
func (s *session) printHistory(ctx context.Context, reply proto.Data, ch, where string) {
	lines := historyLines(reply, ch, s.historyDirect(ctx))
	if len(lines) == 0 {
		s.notice("no messages in %s yet", where)
		return
	}
	s.out.lines(lines...)
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
	if _, err := s.requestAs(ctx, proto.Publish, proto.Data{"user": s.user, "channel": ch, "message": text}); err != nil {
		return err
	}
	if s.sub == nil { // nothing comes back without a subscription: show it now
		s.out.lines(formatPost(proto.Post{Channel: ch, User: s.user, Text: text, Timestamp: time.Now()}))
	}
	return nil
}

// current returns the current channel ("" if none).
func (s *session) current() string {
	return s.channel
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
// carries a request_id, the same in every try (and in a resend of data),
// so it is applied once. Both goroutines may call it.
func (s *session) request(ctx context.Context, service string, data proto.Data) (proto.Data, error) {
	if _, ok := data["request_id"]; !ok && changesState(service) {
		data["request_id"] = NewRequestID()
	}
	tries, busy, backoff := 0, 0, s.cfg.BusyBackoff
	for {
		cur := int(s.cur.Load())
		srv := s.servers[cur]
		reply, err := Call(ctx, srv.req, &s.lamport, service, data)
		var refused *ReplyError
		switch {
		case errors.Is(err, transport.ErrNoReply):
			s.log.Debug("no reply", "server", srv.addr, "err", err)
			if tries++; tries >= s.cfg.Attempts {
				return nil, fmt.Errorf("no server answered (%d tries); is the server running?", tries)
			}
			next := (cur + 1) % len(s.servers)
			s.cur.CompareAndSwap(int32(cur), int32(next)) // unless the other goroutine moved on already
			if next := s.servers[next].addr; next != srv.addr {
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

// server is the endpoint requests go to first.
func (s *session) server() string {
	return s.servers[s.cur.Load()].addr
}

// identity returns the user and its key pair (either goroutine).
func (s *session) identity() (string, *privatedm.KeyPair) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.user, s.pair
}

// setIdentity sets the user and its key pair (Run's goroutine).
func (s *session) setIdentity(user string, pair *privatedm.KeyPair) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.user, s.pair = user, pair
}

// changesState reports whether service changes the server's state, so that
// its requests carry a request_id.
func changesState(service string) bool {
	switch service {
	case proto.Login, proto.Channel, proto.Publish, proto.Message, proto.Logout:
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
// messages are written by two goroutines. On a terminal it writes above
// the input line, and brings the status line in the prompt up to date
// each time.
type printer struct {
	mu     sync.Mutex
	w      io.Writer
	term   *terminal     // nil unless stdin and stdout are a terminal
	prompt func() string // the prompt to show, when term is set
}

// lines writes each line, all of them together. Every line is made
// printable here too, whatever built it: nothing reaches the terminal
// unescaped.
func (p *printer) lines(lines ...string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.term != nil {
		var b strings.Builder
		for _, l := range lines {
			b.WriteString(printable(l) + "\n")
		}
		p.term.line.SetPrompt(p.prompt())
		p.term.Write([]byte(b.String()))
		return
	}
	for _, l := range lines {
		fmt.Fprintln(p.w, printable(l))
	}
}

// refresh redraws the prompt with the status line as it is now (on a
// terminal; elsewhere there is no prompt).
func (p *printer) refresh() {
	p.lines()
}
