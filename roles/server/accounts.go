package server

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"

	"chat/account"
	"chat/proto"
	"chat/ratelimit"
	"chat/store"
)

// Accounts (docs/PROTOCOL.md, "Accounts"). A login with a password claims
// its name the first time and must give that password ever after; it is
// answered with a token, which every later request acting as the name
// carries (publish as user, message as src, history of its DMs, logout).
// Passwords are checked, and tokens issued and revoked, where writes are
// ordered (the coordinator): the account, the password's hash and each
// token's SHA-256 are store changes, so they replicate with the rest. The
// writer checks a message's token against the log's own order (package
// store); the handler checks it first against what is durable to answer
// with a precise erro, and checks it alone for the reads (DM history).

// AccountsConfig configures accounts.
type AccountsConfig struct {
	// Require refuses names that are not claimed: a login without a
	// password, and publish, message and DM history as an unclaimed name.
	Require  bool
	TokenTTL time.Duration      // how long a login's token is valid
	Hash     account.HashConfig // argon2id's parameters for new passwords
	// MaxHashing bounds the password hashes computed at once (each takes
	// Hash.Memory KiB).
	MaxHashing int
	// Failed logins allowed per name and per client within FailureWindow.
	FailuresPerName   int
	FailuresPerClient int
	FailureWindow     time.Duration
}

// DefaultAccountsConfig returns the defaults: names open, tokens valid a
// day, OWASP's argon2id parameters, 5 wrong passwords per name and 20 per
// client per minute.
func DefaultAccountsConfig() AccountsConfig {
	return AccountsConfig{TokenTTL: 24 * time.Hour, Hash: account.DefaultHashConfig(), MaxHashing: 4,
		FailuresPerName: 5, FailuresPerClient: 20, FailureWindow: time.Minute}
}

// Validate reports a config that cannot work.
func (c AccountsConfig) Validate() error {
	switch {
	case c.TokenTTL <= 0:
		return errors.New("server: the token lifetime (--token-ttl) must be positive")
	case c.MaxHashing < 1:
		return errors.New("server: at least one password hash must be allowed at once")
	case c.FailuresPerName < 0 || c.FailuresPerClient < 0:
		return errors.New("server: failed login limits must not be negative")
	case (c.FailuresPerName > 0 || c.FailuresPerClient > 0) && c.FailureWindow <= 0:
		return errors.New("server: the failed login window must be positive")
	}
	return c.Hash.Validate()
}

// Accounts is a handler's accounts: its config and the counters of
// failed logins (kept per server: the coordinator counts per name, the
// server a client is served by counts per client).
type Accounts struct {
	cfg     AccountsConfig
	byName  *ratelimit.Failures
	byConn  *ratelimit.Failures
	hashing chan struct{} // one token per hash being computed
}

// NewAccounts returns the accounts of a handler.
func NewAccounts(cfg AccountsConfig) *Accounts {
	return &Accounts{cfg: cfg,
		byName:  ratelimit.NewFailures(cfg.FailuresPerName, cfg.FailureWindow),
		byConn:  ratelimit.NewFailures(cfg.FailuresPerClient, cfg.FailureWindow),
		hashing: make(chan struct{}, max(1, cfg.MaxHashing))}
}

// hash runs fn (a password hash or its check) when a slot is free.
func (a *Accounts) hash(ctx context.Context, fn func()) error {
	select {
	case a.hashing <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-a.hashing }()
	fn()
	return nil
}

// accounts returns the handler's accounts (the defaults when unset).
func (h *Handler) accounts() *Accounts {
	h.accountsOnce.Do(func() {
		if h.Accounts == nil {
			h.Accounts = NewAccounts(DefaultAccountsConfig())
		}
	})
	return h.Accounts
}

// clientKey is the context key of the client a request came from.
type clientKey struct{}

// withClient returns ctx carrying the client a request came from (the
// identity used by the per-client bounds, "" for another server).
func withClient(ctx context.Context, client string) context.Context {
	return context.WithValue(ctx, clientKey{}, client)
}

func clientOf(ctx context.Context) string {
	client, _ := ctx.Value(clientKey{}).(string)
	return client
}

// The erro texts of accounts that callers may recognise.
const wrongPasswordPrefix = "wrong password for "

// wrongPassword is the erro of a login whose password is not the name's.
func wrongPassword(service, user string) proto.Envelope {
	return proto.ErrorReply(service, fmt.Sprintf("%s%q", wrongPasswordPrefix, user))
}

// isWrongPassword reports whether env is a wrongPassword reply.
func isWrongPassword(env proto.Envelope) bool {
	msg, _ := env.Data["message"].(string)
	return env.Data["status"] == proto.StatusError && strings.HasPrefix(msg, wrongPasswordPrefix)
}

// tooManyAttempts is the erro of a login refused by a failure limit,
// with "retry_after" in whole seconds.
func tooManyAttempts(service, what string, wait time.Duration) proto.Envelope {
	secs := int64(math.Ceil(wait.Seconds()))
	env := proto.ErrorReply(service, fmt.Sprintf("too many failed login attempts %s; try again in %d seconds", what, secs))
	env.Data["retry_after"] = secs
	return env
}

// protected is the erro of a request acting as a claimed name without a token.
func protected(service, user string) proto.Envelope {
	if service == proto.Login {
		return proto.ErrorReply(service, fmt.Sprintf("user %q is protected by a password: log in with its password", user))
	}
	return proto.ErrorReply(service, fmt.Sprintf("user %q is protected by a password: send the token of its login as data.token", user))
}

// unclaimed is the erro of an unclaimed name on a server that requires accounts.
func unclaimed(service, user string) proto.Envelope {
	return proto.ErrorReply(service, fmt.Sprintf("this server requires accounts: %q is not claimed; log in with a password first (the first login of a name with a password claims it)", user))
}

// tokenErr is the erro of a token that is not a live one of user.
func tokenErr(service, user string, err error) proto.Envelope {
	if errors.Is(err, store.ErrTokenExpired) {
		return proto.ErrorReply(service, fmt.Sprintf("the token of user %q has expired: log in again", user))
	}
	return proto.ErrorReply(service, fmt.Sprintf("the token is not valid for user %q: log in again", user))
}

// actingAs returns the user a request acts as, for which it needs a
// token if the name is claimed ("": none).
func actingAs(req proto.Request) string {
	switch req.Service {
	case proto.Publish, proto.Logout:
		return req.User
	case proto.Message:
		return req.Src
	case proto.History:
		if req.Peer != "" {
			return req.User
		}
	}
	return ""
}

// authorize checks that a request acting as a name may: a claimed name
// needs a live token of its own (checked against what is durable; the
// writer checks a write again in log order), an unclaimed one is refused
// when accounts are required. refused is false when it may go on.
func (h *Handler) authorize(req proto.Request) (reply proto.Envelope, refused bool) {
	user := actingAs(req)
	if user == "" {
		return proto.Envelope{}, false
	}
	if _, claimed := h.Store.Account(user); !claimed {
		if h.accounts().cfg.Require {
			return unclaimed(req.Service, user), true
		}
		if req.Service == proto.Logout {
			return tokenErr(req.Service, user, store.ErrBadToken), true
		}
		return proto.Envelope{}, false
	}
	if req.Token == "" {
		return protected(req.Service, user), true
	}
	if err := h.Store.CheckToken(user, req.Token, h.Clock.Now()); err != nil {
		return tokenErr(req.Service, user, err), true
	}
	return proto.Envelope{}, false
}

// clientLimited refuses a password login from a client with too many
// failed ones (counted by countFailure), before any work is done for it.
func (h *Handler) clientLimited(ctx context.Context, req proto.Request) (proto.Envelope, bool) {
	client := clientOf(ctx)
	if client == "" {
		return proto.Envelope{}, false
	}
	if wait, blocked := h.accounts().byConn.Blocked(client, h.Clock.Now()); blocked {
		return tooManyAttempts(req.Service, "from this client", wait), true
	}
	return proto.Envelope{}, false
}

// countFailure counts a wrong password against the client that sent it.
func (h *Handler) countFailure(ctx context.Context, reply proto.Envelope) {
	if client := clientOf(ctx); client != "" && isWrongPassword(reply) {
		h.accounts().byConn.Fail(client, h.Clock.Now())
	}
}

// login answers a login that needs the accounts: one with a password,
// or of a claimed name, or when accounts are required. It runs where
// writes are ordered. ok is false for a plain login of an open name,
// which the common path stores.
func (h *Handler) login(ctx context.Context, req proto.Request) (reply proto.Envelope, handled bool) {
	acc, claimed := h.Store.Account(req.User)
	a := h.accounts()
	switch {
	case req.Password == "" && claimed:
		return protected(req.Service, req.User), true
	case req.Password == "" && req.PublicKey != "":
		return proto.ErrorReply(req.Service, fmt.Sprintf("a public key is stored only on a claimed name: log in as %q with a password", req.User)), true
	case req.Password == "" && a.cfg.Require:
		return unclaimed(req.Service, req.User), true
	case req.Password == "":
		return proto.Envelope{}, false
	}
	now := h.Clock.Now()
	if wait, blocked := a.byName.Blocked(req.User, now); blocked {
		return tooManyAttempts(req.Service, fmt.Sprintf("for %q", req.User), wait), true
	}
	token := account.NewToken()
	l := &store.Login{User: req.User, Timestamp: now, PublicKey: req.PublicKey,
		Token: &store.Token{Hash: store.TokenHash(token), User: req.User, Expires: now.Add(a.cfg.TokenTTL)}}
	var good bool
	err := a.hash(ctx, func() {
		if claimed {
			good = account.Verify(req.Password, acc.PasswordHash)
		} else {
			l.Claim, l.PasswordHash, good = true, account.Hash(req.Password, a.cfg.Hash), true
		}
	})
	switch {
	case err != nil:
		return retryReply(req.Service, errors.New("the server is stopping; try again")), true
	case !good:
		a.byName.Fail(req.User, now)
		h.Log.Info("login refused: wrong password", "user", req.User)
		return wrongPassword(req.Service, req.User), true
	}
	// No request key: its stored reply would hold the token itself.
	_, lsn, err := h.Store.Submit(ctx, store.Change{Login: l})
	switch {
	case errors.Is(err, store.ErrClaimed):
		return proto.ErrorReply(req.Service, fmt.Sprintf("user %q was claimed by another login just now: log in with its password", req.User)), true
	case err != nil:
		h.Log.Error("store write failed", "service", req.Service, "err", err)
		return retryReply(req.Service, errors.New("the server could not store the request; try again")), true
	}
	if err := h.committed(ctx, lsn); err != nil {
		return retryReply(req.Service, err), true
	}
	h.Log.Info("login", "user", req.User, "claimed", l.Claim, "public_key", req.PublicKey != "")
	return ok(req.Service, proto.Data{"status": proto.StatusSuccess, "token": token,
		"expires": l.Token.Expires.Unix(), "claimed": l.Claim}), true
}

// whois answers the whois service (after the read barrier).
func (h *Handler) whois(req proto.Request) proto.Envelope {
	acc, claimed := h.Store.Account(req.User)
	if !claimed && !h.Store.HasUser(req.User) {
		return proto.ErrorReply(req.Service, fmt.Sprintf("user %q does not exist", req.User))
	}
	return ok(req.Service, proto.Data{"status": proto.StatusOK, "user": req.User, "claimed": claimed,
		"public_key": acc.PublicKey, "fingerprint": account.Fingerprint(acc.PublicKey)})
}
