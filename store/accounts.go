package store

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"maps"
	"time"
)

// Accounts. A user name may be claimed with a password: the claim, the
// tokens its logins are given and their revocation are changes like any
// other (a login entry that carries them, a logout entry), so they are in
// the change log, replicate to every server and survive restarts. The
// store keeps only what is needed to check a password and a token: the
// password's slow salted hash (made by the caller; opaque here) and the
// SHA-256 of each token, never a token itself, so a copy of the files
// gives no live token.
//
// A claimed user's messages and logouts must carry one of its valid
// tokens (Change.AuthToken); the writer checks that against its own view,
// exactly as it checks that a channel exists, so a logout and a post
// racing each other are decided in the order of the log.

// Errors of account checks.
var (
	// ErrClaimed is returned when a login claims a name already claimed,
	// or logs in to a claimed name without being given a token.
	ErrClaimed = errors.New("store: the name is claimed already")
	// ErrNotClaimed is returned when a login gives a token or a public key
	// to a name that is not claimed.
	ErrNotClaimed = errors.New("store: the name is not claimed")
	// ErrBadToken is returned when a change by a claimed user carries no
	// token of that user, or one that is revoked.
	ErrBadToken = errors.New("store: no valid token for the user")
	// ErrTokenExpired is returned when the token is the user's but has
	// expired.
	ErrTokenExpired = errors.New("store: the token has expired")
)

// Account is a claimed user name.
type Account struct {
	User         string
	PasswordHash string // the password's slow salted hash, encoded by the caller
	PublicKey    string // the user's public key as the client sent it ("" when none)
}

// Token is a login token as stored: its SHA-256 only.
type Token struct {
	Hash    string // TokenHash of the token
	User    string
	Expires time.Time
}

// TokenHash is how a token is stored and looked up: the hex SHA-256 of
// the token as the client sends it.
func TokenHash(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

// Logout revokes one token of a user.
type Logout struct {
	User      string
	Timestamp time.Time
}

// storedToken is a token in memory: whose, and until when (Unix ms).
type storedToken struct {
	user    string
	expires int64
}

// accounts is a view of the accounts and live tokens. The writer has one
// (what the log holds), the engine another (what is durable); both are
// changed only by apply, entry by entry in log order.
type accounts struct {
	byUser map[string]Account
	tokens map[string]storedToken // by TokenHash
	pruned int                    // len(tokens) after the last prune
}

func newAccounts() *accounts {
	return &accounts{byUser: map[string]Account{}, tokens: map[string]storedToken{}}
}

func (a *accounts) clone() *accounts {
	return &accounts{byUser: maps.Clone(a.byUser), tokens: maps.Clone(a.tokens), pruned: a.pruned}
}

// hasEffect reports whether e changes the accounts.
func hasEffect(e *entry) bool {
	return e.Kind == entryLogout || (e.Kind == entryLogin && (e.Claim || e.PubKey != "" || e.Token != ""))
}

// apply makes the account changes of e (a login or a logout entry).
func (a *accounts) apply(e *entry) {
	switch e.Kind {
	case entryLogin:
		acc, claimed := a.byUser[e.User]
		if e.Claim {
			acc, claimed = Account{User: e.User, PasswordHash: e.Hash}, true
		}
		if !claimed {
			return
		}
		if e.PubKey != "" {
			acc.PublicKey = e.PubKey
		}
		a.byUser[e.User] = acc
		if e.Token != "" {
			a.tokens[e.Token] = storedToken{user: e.User, expires: e.Expires}
		}
	case entryLogout:
		delete(a.tokens, e.Token)
	}
}

// check reports whether hash is a live token of user at time at (Unix
// ms): nil, ErrBadToken or ErrTokenExpired.
func (a *accounts) check(user, hash string, at int64) error {
	t, ok := a.tokens[hash]
	switch {
	case hash == "" || !ok || t.user != user:
		return ErrBadToken
	case t.expires <= at:
		return ErrTokenExpired
	}
	return nil
}

// prune forgets the tokens expired by now (Unix ms) once their number has
// doubled since the last prune, so that it costs little per token.
func (a *accounts) prune(now int64) {
	if len(a.tokens) < max(64, 2*a.pruned) {
		return
	}
	for hash, t := range a.tokens {
		if t.expires <= now {
			delete(a.tokens, hash)
		}
	}
	a.pruned = len(a.tokens)
}

// checkAuth runs the account checks of one change against the writer's
// view; e is the change's entry, filled in except for its LSN. It returns
// the error the change fails with (nil: none).
func (s *engine) checkAuth(ch Change, e *entry) error {
	acc := s.wAccounts
	switch {
	case ch.Login != nil && ch.Login.Claim:
		if _, claimed := acc.byUser[e.User]; claimed {
			return ErrClaimed
		}
	case ch.Login != nil:
		_, claimed := acc.byUser[e.User]
		switch {
		case !claimed && (e.Token != "" || e.PubKey != ""):
			return ErrNotClaimed
		case claimed && e.Token == "":
			return ErrClaimed // a plain login raced the claim
		}
		if e.PubKey != "" {
			e.PrevKey = acc.byUser[e.User].PublicKey // to undo it (TruncateAfter)
		}
	case ch.Logout != nil:
		if err := acc.check(e.User, ch.AuthToken, e.TS); err != nil {
			return err
		}
		e.Token, e.Expires = ch.AuthToken, acc.tokens[ch.AuthToken].expires
	case ch.Message != nil:
		if _, claimed := acc.byUser[e.User]; claimed {
			return acc.check(e.User, ch.AuthToken, e.TS)
		}
	}
	return nil
}

// Account returns the account of a claimed user (durable state).
func (s *engine) Account(user string) (Account, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	acc, ok := s.accounts.byUser[user]
	return acc, ok
}

// CheckToken reports whether token (as the client sent it) is a live
// token of user at time at, in the durable state: nil, ErrBadToken or
// ErrTokenExpired.
func (s *engine) CheckToken(user, token string, at time.Time) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.accounts.check(user, TokenHash(token), at.UnixMilli())
}

// loadAccounts reads the accounts and the tokens not yet expired.
func (s *engine) loadAccounts() error {
	rows, err := s.wdb.Query("SELECT name, password_hash, public_key FROM accounts")
	if err != nil {
		return err
	}
	for rows.Next() {
		var a Account
		if err := rows.Scan(&a.User, &a.PasswordHash, &a.PublicKey); err != nil {
			rows.Close()
			return err
		}
		s.accounts.byUser[a.User] = a
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	rows, err = s.wdb.Query("SELECT token_sha256, user, expires_ms FROM tokens WHERE expires_ms > ?", time.Now().UnixMilli())
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var hash string
		var t storedToken
		if err := rows.Scan(&hash, &t.user, &t.expires); err != nil {
			return err
		}
		s.accounts.tokens[hash] = t
	}
	s.accounts.pruned = len(s.accounts.tokens)
	return rows.Err()
}
