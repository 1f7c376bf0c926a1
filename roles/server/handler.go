package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"chat/clock"
	"chat/cluster"
	"chat/proto"
	"chat/store"
)

// Handler is the request logic of a server, with no sockets in it: it
// turns one request frame into one reply and the publications the request
// causes. It is safe for concurrent use; durability and ordering of writes
// are the store's job.
type Handler struct {
	Store   *store.Store
	Lamport *clock.Lamport
	Clock   *clock.Physical
	Limits  proto.Limits
	Log     *slog.Logger
	// Cluster is the server's part in the cluster (package cluster): who
	// orders writes, and the cluster's own services. nil: a server alone
	// that orders its own writes.
	Cluster Cluster
	// Accounts configures accounts and counts failed logins (accounts.go);
	// nil: the defaults.
	Accounts     *Accounts
	accountsOnce sync.Once
}

// Cluster is what the request logic needs of the cluster.
type Cluster interface {
	// Leading reports whether this server orders writes now.
	Leading() bool
	// Forward sends a client's write to the server that orders writes.
	Forward(ctx context.Context, frame []byte) ([]byte, error)
	// ReadBarrier returns once this server holds every acknowledged write.
	ReadBarrier(ctx context.Context) error
	// Committed waits until the log entry at lsn is replicated.
	Committed(ctx context.Context, lsn uint64) error
	// Serve answers one of the cluster's own services (cluster.IsService).
	Serve(ctx context.Context, service string, frame []byte) []byte
	// Handled counts a request handled (clock sync runs every few).
	Handled()
}

// Handle answers one request frame. It never fails: every problem becomes
// an "erro" reply.
func (h *Handler) Handle(ctx context.Context, frame []byte) (reply []byte, pubs []proto.Publication) {
	return h.handle(ctx, frame, false)
}

// handle answers a frame; forwarded is true for a write another server
// forwarded here (it is never forwarded again).
func (h *Handler) handle(ctx context.Context, frame []byte, forwarded bool) (reply []byte, pubs []proto.Publication) {
	if h.Cluster != nil {
		switch service := proto.PeekService(frame); {
		case cluster.IsService(service):
			return h.Cluster.Serve(ctx, service, frame), nil
		case service == cluster.ServiceForward && !forwarded:
			inner, clk, err := cluster.Unwrap(frame)
			h.Lamport.Observe(clk)
			if err == nil {
				return h.handle(ctx, inner, true)
			}
		}
		defer h.Cluster.Handled()
	}
	start := time.Now()
	req, err := proto.ParseRequest(frame, h.Limits)
	h.Lamport.Observe(req.Clock)
	var env proto.Envelope
	if err != nil {
		env = proto.ReplyFor(req.Service, err)
	} else {
		env, pubs = h.serve(ctx, req, frame, forwarded)
	}
	h.logRequest(ctx, req, env, forwarded, time.Since(start))
	reply = env.Stamp(h.Clock.Now(), h.Lamport.Tick()).Encode()
	if max := h.Limits.MaxReply; max > 0 && len(reply) > max {
		// Pages and lists are cut to fit; this is the net under them, so
		// that no reply is ever more than every hop accepts.
		h.Log.Warn("reply over the limit, refused", "service", req.Service, "bytes", len(reply), "limit", max)
		reply = proto.ErrorReply(req.Service, fmt.Sprintf("the reply would be %d bytes, over the limit of %d; ask for less", len(reply), max)).
			Stamp(h.Clock.Now(), h.Lamport.Tick()).Encode()
	}
	return reply, pubs
}

// logRequest writes one debug line per client request (shown with
// --log-level debug): its service, its user, its outcome and the time it
// took. A write another server forwarded here says so.
func (h *Handler) logRequest(ctx context.Context, req proto.Request, reply proto.Envelope, forwarded bool, took time.Duration) {
	if h.Log == nil || !h.Log.Enabled(ctx, slog.LevelDebug) {
		return
	}
	user := req.User
	if user == "" {
		user = req.Src // a direct message's sender
	}
	outcome := proto.StatusOK
	if status, _, _ := reply.Data.String(reply.Service, "status"); status == proto.StatusError {
		outcome = proto.StatusError
	}
	attrs := []any{"service", req.Service}
	if user != "" { // users, channels and channel history name nobody
		attrs = append(attrs, "user", user)
	}
	attrs = append(attrs, "outcome", outcome, "took", took)
	if outcome == proto.StatusError {
		why, _, _ := reply.Data.String(reply.Service, "description")
		attrs = append(attrs, "why", why)
	}
	if forwarded {
		attrs = append(attrs, "forwarded", true)
	}
	h.Log.Debug("request", attrs...)
}

// Refuse answers a request frame with an error without serving it (the
// client is over its rate limit, or has too many requests queued).
func (h *Handler) Refuse(frame []byte, why string) []byte { return h.refuse(frame, why, false) }

func (h *Handler) refuse(frame []byte, why string, retry bool) []byte {
	service := proto.ErrorService
	if env, err := proto.Decode(frame); err == nil {
		service = env.Service
		h.Lamport.Observe(env.Data.Clock())
	}
	env := proto.ErrorReply(service, why)
	if retry {
		env.Data["retry"] = true
	}
	return env.Stamp(h.Clock.Now(), h.Lamport.Tick()).Encode()
}

// serve runs a valid request. A password login is refused at once when
// its client has too many failed ones, and a wrong password counts
// against the client here, where the client is known (a forwarded
// request comes from another server).
func (h *Handler) serve(ctx context.Context, req proto.Request, frame []byte, forwarded bool) (proto.Envelope, []proto.Publication) {
	if req.Service != proto.Login || req.Password == "" || forwarded {
		return h.route(ctx, req, frame, forwarded)
	}
	if reply, limited := h.clientLimited(ctx, req); limited {
		return reply, nil
	}
	reply, pubs := h.route(ctx, req, frame, forwarded)
	h.countFailure(ctx, reply)
	return reply, pubs
}

// route serves a read here and a write where writes are ordered.
func (h *Handler) route(ctx context.Context, req proto.Request, frame []byte, forwarded bool) (proto.Envelope, []proto.Publication) {
	switch req.Service {
	case proto.Users, proto.Channels, proto.History, proto.Whois:
		if h.Cluster != nil {
			if err := h.Cluster.ReadBarrier(ctx); err != nil {
				return retryReply(req.Service, err), nil
			}
		}
	default:
		if h.Cluster != nil && !h.Cluster.Leading() {
			if forwarded {
				return retryReply(req.Service, errors.New("this server no longer orders writes; try again")), nil
			}
			return h.forward(ctx, req.Service, frame), nil
		}
	}
	switch req.Service {
	case proto.Users:
		users, more := h.fitNames(h.Store.Users(), 1)
		return ok(req.Service, withMore(proto.Data{"users": users}, more)), nil
	case proto.Channels:
		chs, more := h.fitNames(h.Store.Channels(), 2) // the list goes under two keys
		return ok(req.Service, withMore(proto.Data{"channels": chs, "users": chs}, more)), nil
	case proto.History:
		if reply, refused := h.authorize(req); refused {
			return reply, nil
		}
		return h.history(ctx, req), nil
	case proto.Whois:
		return h.whois(req), nil
	case proto.Login:
		if reply, handled := h.login(ctx, req); handled {
			return reply, nil
		}
	}
	if reply, refused := h.authorize(req); refused {
		return reply, nil
	}

	// The rest change state: a retried request_id gets its first answer.
	key := requestKey(req)
	if key != "" {
		if stored, found := h.Store.Replay(key); found {
			return h.replayCommitted(ctx, req.Service, stored), nil
		}
	}
	change := h.change(req)
	change.RequestKey = key
	change.ReplyFunc = func(_ int64, outcome error) []byte { return mustEncodeData(outcomeReply(req, outcome).Data) }
	id, lsn, err := h.Store.Submit(ctx, change)
	if err == nil || isCheckFailure(err) {
		if cerr := h.committed(ctx, lsn); cerr != nil {
			return retryReply(req.Service, cerr), nil
		}
	}
	switch {
	case errors.Is(err, store.ErrDuplicate):
		stored, _ := h.Store.Replay(key)
		return h.replayCommitted(ctx, req.Service, stored), nil
	case err != nil && !isCheckFailure(err):
		h.Log.Error("store write failed", "service", req.Service, "err", err)
		return retryReply(req.Service, errors.New("the server could not store the request; try again")), nil
	case err != nil:
		return outcomeReply(req, err), nil
	}
	h.logChange(req, id)
	return outcomeReply(req, nil), publications(change.Message, id)
}

// committed waits until the log entry at lsn is replicated (nothing to
// wait for alone, or when no entry was written).
func (h *Handler) committed(ctx context.Context, lsn uint64) error {
	if h.Cluster == nil || lsn == 0 {
		return nil
	}
	return h.Cluster.Committed(ctx, lsn)
}

// replayCommitted answers a retried request with its stored reply, once
// everything this server holds is replicated (the first try may not be).
func (h *Handler) replayCommitted(ctx context.Context, service string, stored []byte) proto.Envelope {
	last, _ := h.Store.Last()
	if err := h.committed(ctx, last); err != nil {
		return retryReply(service, err)
	}
	return replayed(service, stored)
}

// forward hands a write to the server that orders writes and relays its
// answer.
func (h *Handler) forward(ctx context.Context, service string, frame []byte) proto.Envelope {
	reply, err := h.Cluster.Forward(ctx, frame)
	if err != nil {
		return retryReply(service, err)
	}
	env, err := proto.Decode(reply) // its clock is merged already (cluster.Node.Forward)
	if err != nil {
		return retryReply(service, fmt.Errorf("the coordinator's answer was malformed; try again"))
	}
	return env
}

// retryReply is an error reply that tells the client to retry (extension
// "retry": true): nothing was applied, or the retry will be recognised by
// its request_id.
func retryReply(service string, err error) proto.Envelope {
	why := strings.TrimPrefix(err.Error(), cluster.ErrRetry.Error()+": ")
	env := proto.ErrorReply(service, why)
	env.Data["retry"] = true
	return env
}

// isCheckFailure tells a request the store refused (the answer is "erro")
// from a failure of the store itself.
func isCheckFailure(err error) bool {
	return errors.Is(err, store.ErrChannelExists) || errors.Is(err, store.ErrNoChannel) || errors.Is(err, store.ErrNoUser) ||
		errors.Is(err, store.ErrBadToken) || errors.Is(err, store.ErrTokenExpired) || errors.Is(err, store.ErrClaimed) || errors.Is(err, store.ErrNotClaimed)
}

// outcomeReply is the reply of a state-changing request whose store write
// ended with outcome (nil: applied). It is also what a request key stores,
// so a retry gets the same answer.
func outcomeReply(req proto.Request, outcome error) proto.Envelope {
	switch {
	case outcome == nil && (req.Service == proto.Login || req.Service == proto.Channel):
		return ok(req.Service, proto.Data{"status": proto.StatusSuccess})
	case outcome == nil:
		return ok(req.Service, proto.Data{"status": proto.StatusOK})
	case errors.Is(outcome, store.ErrChannelExists):
		return proto.ErrorReply(req.Service, fmt.Sprintf("channel %q already exists", req.Channel))
	case errors.Is(outcome, store.ErrNoChannel):
		return proto.ErrorReply(req.Service, fmt.Sprintf("channel %q does not exist", req.Channel))
	case errors.Is(outcome, store.ErrNoUser):
		return proto.ErrorReply(req.Service, fmt.Sprintf("user %q does not exist", req.Dst))
	case errors.Is(outcome, store.ErrBadToken), errors.Is(outcome, store.ErrTokenExpired):
		return tokenErr(req.Service, actingAs(req), outcome)
	case errors.Is(outcome, store.ErrClaimed), errors.Is(outcome, store.ErrNotClaimed):
		return protected(req.Service, req.User) // a plain login raced a claim
	}
	return proto.ErrorReply(req.Service, outcome.Error())
}

// change builds the store change of a state-changing request.
func (h *Handler) change(req proto.Request) store.Change {
	now := h.Clock.Now()
	switch req.Service {
	case proto.Login:
		return store.Change{Login: &store.Login{User: req.User, Timestamp: now}}
	case proto.Channel:
		return store.Change{Channel: &store.Channel{Name: req.Channel, Timestamp: now}}
	case proto.Publish:
		return store.Change{AuthToken: authToken(req), Message: &store.Message{Kind: store.Post, Channel: req.Channel, From: req.User, Text: req.Text, Timestamp: now, Clock: h.Lamport.Tick()}}
	case proto.Logout:
		return store.Change{AuthToken: authToken(req), Logout: &store.Logout{User: req.User, Timestamp: now}}
	default: // proto.Message
		return store.Change{AuthToken: authToken(req), Message: &store.Message{Kind: store.Direct, From: req.Src, To: req.Dst, Text: req.Text, Timestamp: now, Clock: h.Lamport.Tick()}}
	}
}

// authToken is how the store knows the request's token: its hash ("" for none).
func authToken(req proto.Request) string {
	if req.Token == "" {
		return ""
	}
	return store.TokenHash(req.Token)
}

func (h *Handler) logChange(req proto.Request, id int64) {
	switch req.Service {
	case proto.Login:
		h.Log.Info("login", "user", req.User)
	case proto.Channel:
		h.Log.Info("channel created", "channel", req.Channel)
	case proto.Publish:
		h.Log.Debug("post", "id", id, "channel", req.Channel, "user", req.User)
	case proto.Message:
		h.Log.Debug("direct message", "id", id, "from", req.Src, "to", req.Dst)
	case proto.Logout:
		h.Log.Info("logout", "user", req.User)
	}
}

// history answers the history extension.
func (h *Handler) history(ctx context.Context, req proto.Request) proto.Envelope {
	q := store.HistoryQuery{Channel: req.Channel, User: req.User, Peer: req.Peer, Limit: req.Limit, Before: req.Before}
	if req.Channel != "" && !h.Store.HasChannel(req.Channel) {
		return proto.ErrorReply(req.Service, fmt.Sprintf("channel %q does not exist", req.Channel))
	}
	msgs, err := h.Store.History(ctx, q)
	if err != nil {
		h.Log.Error("history read failed", "err", err)
		return proto.ErrorReply(req.Service, "the server could not read the history; try again")
	}
	// The page keeps the newest messages that fit the reply budget
	// (always one at least), so paging backwards with before = the
	// page's first id goes on where it stopped.
	budget := h.replyBudget(1)
	enc := make([]msgpack.RawMessage, len(msgs))
	first, size := len(msgs), 0
	for i := len(msgs) - 1; i >= 0; i-- {
		b, err := msgpack.Marshal(messageData(msgs[i]))
		if err != nil {
			panic(err) // only values built here
		}
		if budget > 0 && size+len(b) > budget && first < len(msgs) {
			break
		}
		enc[i], first, size = b, i, size+len(b)
	}
	more := first > 0
	if !more && len(msgs) > 0 && len(msgs) >= min(q.Limit, store.MaxHistoryLimit) {
		// A full page: say whether anything older is left.
		older, err := h.Store.History(ctx, store.HistoryQuery{Channel: q.Channel, User: q.User, Peer: q.Peer, Limit: 1, Before: msgs[0].ID})
		more = err == nil && len(older) > 0
	}
	return ok(req.Service, proto.Data{"status": proto.StatusOK, "messages": enc[first:], "more": more})
}

// replyBudget is the room for the list of a reply that puts it under
// `copies` keys (0: unbounded).
func (h *Handler) replyBudget(copies int) int {
	if h.Limits.MaxReply <= 0 {
		return 0
	}
	return max(1, (h.Limits.MaxReply-proto.ReplyOverhead)/copies)
}

// fitNames returns the first names (sorted) that fit the reply budget
// and whether some were left out.
func (h *Handler) fitNames(names []string, copies int) ([]string, bool) {
	budget := h.replyBudget(copies)
	if budget == 0 {
		return names, false
	}
	size := 5 // the array's header
	for i, n := range names {
		size += len(n) + 5 // a string's header is at most 5 bytes
		if size > budget {
			h.Log.Debug("list cut to fit the reply limit", "kept", i, "of", len(names))
			return names[:i], true
		}
	}
	return names, false
}

// withMore adds "more": true (extension) to a list that was cut.
func withMore(d proto.Data, more bool) proto.Data {
	if more {
		d["more"] = true
	}
	return d
}

// messageData renders a stored message as it was published, plus its id.
func messageData(m store.Message) proto.Data {
	if m.Kind == store.Direct {
		return proto.Direct{ID: m.ID, From: m.From, To: m.To, Text: m.Text, Timestamp: m.Timestamp, Clock: m.Clock}.Data()
	}
	return proto.Post{ID: m.ID, Channel: m.Channel, User: m.From, Text: m.Text, Timestamp: m.Timestamp, Clock: m.Clock}.Data()
}

// publications returns what a stored message publishes on the bus.
func publications(m *store.Message, id int64) []proto.Publication {
	if m == nil {
		return nil
	}
	switch m.Kind {
	case store.Post:
		return []proto.Publication{proto.PostPublication(proto.Post{ID: id, Channel: m.Channel, User: m.From, Text: m.Text, Timestamp: m.Timestamp, Clock: m.Clock})}
	case store.Direct:
		return []proto.Publication{proto.DirectPublication(proto.Direct{ID: id, From: m.From, To: m.To, Text: m.Text, Timestamp: m.Timestamp, Clock: m.Clock})}
	}
	return nil
}

// requestKey scopes a request_id to its author and service ("" when the
// request carries none).
func requestKey(req proto.Request) string {
	if req.RequestID == "" {
		return ""
	}
	return req.Author() + "\x00" + req.Service + "\x00" + req.RequestID
}

func ok(service string, d proto.Data) proto.Envelope {
	return proto.Envelope{Service: service, Data: d}
}

// replayed rebuilds the reply stored for a request key.
func replayed(service string, stored []byte) proto.Envelope {
	var d proto.Data
	if err := msgpack.Unmarshal(stored, &d); err != nil || d == nil {
		d = proto.Data{"status": proto.StatusOK}
	}
	return proto.Envelope{Service: service, Data: d}
}

func mustEncodeData(d proto.Data) []byte {
	b, err := msgpack.Marshal(d)
	if err != nil {
		panic(err)
	}
	return b
}
