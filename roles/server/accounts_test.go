package server

import (
	"context"
	"encoding/base64"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"chat/account"
	"chat/clock"
	"chat/internal/fakeclock"
	"chat/privatedm"
	"chat/proto"
	"chat/store"
)

// testAccounts are accounts with argon2id's cheapest parameters.
func testAccounts() AccountsConfig {
	cfg := DefaultAccountsConfig()
	cfg.Hash = account.HashConfig{Time: 1, Memory: 8, Threads: 1}
	return cfg
}

// accountsHandler is a handler on a store in dir with accounts cfg and
// the clock clk.
func accountsHandler(t testing.TB, dir string, cfg AccountsConfig, clk *fakeclock.Clock) *Handler {
	t.Helper()
	st, err := store.Open(store.DefaultConfig(filepath.Join(dir, "h.db")))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return &Handler{Store: st, Lamport: &clock.Lamport{}, Clock: clock.NewPhysical(clk, 0), Limits: proto.DefaultLimits(),
		Log: slog.New(slog.DiscardHandler), Accounts: NewAccounts(cfg)}
}

// newClock is a fake clock that starts at a fixed time.
func newClock() *fakeclock.Clock { return fakeclock.New(time.Unix(1_800_000_000, 0)) }

// call sends one request and returns its reply's data and publications.
func (h *Handler) call(t testing.TB, ctx context.Context, service string, data map[string]any) (proto.Data, []proto.Publication) {
	t.Helper()
	reply, pubs := h.Handle(ctx, request(t, service, data))
	return decode(t, reply).Data, pubs
}

func wantErro(t testing.TB, d proto.Data, pubs []proto.Publication, contains string) {
	t.Helper()
	if d["status"] != proto.StatusError || len(pubs) != 0 {
		t.Fatalf("want erro %q and no publication, got %v (%d publications)", contains, d, len(pubs))
	}
	if msg, _ := d["message"].(string); !strings.Contains(msg, contains) {
		t.Fatalf("erro %q does not say %q", msg, contains)
	}
}

// claim logs user in with password and returns its token.
func claim(t testing.TB, h *Handler, user, password string) string {
	t.Helper()
	d, _ := h.call(t, context.Background(), proto.Login, map[string]any{"user": user, "password": password})
	token, _ := d["token"].(string)
	if d["status"] != proto.StatusSuccess || token == "" {
		t.Fatalf("login of %s with a password: %v", user, d)
	}
	return token
}

// The measurements: any connection could post and send DMs as
// anyone and read anyone's DMs. For a claimed name, each is refused
// without a token of that name: none, a wrong one, another user's, an
// expired one; and nothing is stored or published.
func TestImpersonatingAClaimedNameIsRefused(t *testing.T) {
	clk := newClock()
	h := accountsHandler(t, t.TempDir(), testAccounts(), clk)
	ctx := context.Background()
	aliceToken := claim(t, h, "alice", "alice-pw")
	bobToken := claim(t, h, "bob", "bob-pw")
	h.call(t, ctx, proto.Login, map[string]any{"user": "carol"})
	h.call(t, ctx, proto.Channel, map[string]any{"channel": "g"})
	// Bob's private conversation, sent with his token.
	if d, pubs := h.call(t, ctx, proto.Message, map[string]any{"src": "bob", "dst": "carol", "message": "secret", "token": bobToken}); d["status"] != proto.StatusOK || len(pubs) != 1 {
		t.Fatalf("bob's own DM: %v", d)
	}

	expired := claim(t, h, "bob", "bob-pw") // valid now, expired below
	clk.Advance(testAccounts().TokenTTL - time.Minute)
	bobToken = claim(t, h, "bob", "bob-pw")
	clk.Advance(2 * time.Minute)

	attempts := map[string]struct {
		token string
		says  string
	}{
		"no token":           {"", "protected by a password"},
		"a wrong token":      {account.NewToken(), "not valid for user \"bob\""},
		"another user's":     {aliceToken, "not valid for user \"bob\""},
		"an expired one":     {expired, "expired"},
		"a token of garbage": {"x", "not valid"},
	}
	for what, a := range attempts {
		with := func(d map[string]any) map[string]any {
			if a.token != "" {
				d["token"] = a.token
			}
			return d
		}
		d, pubs := h.call(t, ctx, proto.Publish, with(map[string]any{"user": "bob", "channel": "g", "message": "as bob"}))
		wantErro(t, d, pubs, a.says)
		d, pubs = h.call(t, ctx, proto.Message, with(map[string]any{"src": "bob", "dst": "carol", "message": "as bob", "request_id": "r-" + what}))
		wantErro(t, d, pubs, a.says)
		d, pubs = h.call(t, ctx, proto.History, with(map[string]any{"user": "bob", "peer": "carol"}))
		wantErro(t, d, pubs, a.says)
		if _, ok := d["messages"]; ok {
			t.Fatalf("%s: history of bob's DMs returned messages: %v", what, d)
		}
		if what != "no token" {
			d, pubs = h.call(t, ctx, proto.Logout, with(map[string]any{"user": "bob"}))
			wantErro(t, d, pubs, a.says)
		}
	}
	if n, _ := h.Store.Count(ctx); n != 1 {
		t.Fatalf("%d messages stored, want only bob's own DM", n)
	}

	// With bob's live token, all of it works.
	if d, pubs := h.call(t, ctx, proto.Publish, map[string]any{"user": "bob", "channel": "g", "message": "me", "token": bobToken}); d["status"] != proto.StatusOK || len(pubs) != 1 {
		t.Fatalf("bob's own post: %v", d)
	}
	d, _ := h.call(t, ctx, proto.History, map[string]any{"user": "bob", "peer": "carol", "token": bobToken})
	if msgs, _ := d["messages"].([]any); len(msgs) != 1 {
		t.Fatalf("bob's own DM history: %v", d)
	}
	// The other side of the conversation, carol, is an open name: anyone
	// may read it as carol (the documented limit of unclaimed names).
	if d, _ := h.call(t, ctx, proto.History, map[string]any{"user": "carol", "peer": "bob"}); d["status"] != proto.StatusOK {
		t.Fatalf("carol's history: %v", d)
	}

	// Logging out ends the token.
	if d, _ := h.call(t, ctx, proto.Logout, map[string]any{"user": "bob", "token": bobToken}); d["status"] != proto.StatusOK {
		t.Fatalf("logout: %v", d)
	}
	d, pubs := h.call(t, ctx, proto.Publish, map[string]any{"user": "bob", "channel": "g", "message": "after", "token": bobToken})
	wantErro(t, d, pubs, "not valid for user \"bob\"")
	d, pubs = h.call(t, ctx, proto.Logout, map[string]any{"user": "bob", "token": bobToken})
	wantErro(t, d, pubs, "not valid")
}

func TestLoginClaimsThenNeedsThePassword(t *testing.T) {
	h := accountsHandler(t, t.TempDir(), testAccounts(), newClock())
	ctx := context.Background()
	kp, err := privatedm.Generate()
	if err != nil {
		t.Fatal(err)
	}
	key := privatedm.EncodePublic(&kp.Public)
	d, _ := h.call(t, ctx, proto.Login, map[string]any{"user": "ana", "password": "pw", "public_key": key})
	token, _ := d["token"].(string)
	raw, err := base64.RawURLEncoding.DecodeString(token)
	if d["status"] != proto.StatusSuccess || d["claimed"] != true || err != nil || len(raw) != 32 {
		t.Fatalf("claiming login: %v", d)
	}
	if exp, _, _ := d.Int(proto.Login, "expires"); exp != newClock().Now().Add(24*time.Hour).Unix() {
		t.Fatalf("expires %v, want 24h from now", d["expires"])
	}

	d, pubs := h.call(t, ctx, proto.Login, map[string]any{"user": "ana"})
	wantErro(t, d, pubs, "protected by a password")
	d, pubs = h.call(t, ctx, proto.Login, map[string]any{"user": "ana", "password": "nope"})
	wantErro(t, d, pubs, `wrong password for "ana"`)
	d, _ = h.call(t, ctx, proto.Login, map[string]any{"user": "ana", "password": "pw"})
	if d["status"] != proto.StatusSuccess || d["claimed"] != false || d["token"] == token {
		t.Fatalf("second login: %v", d)
	}

	d, _ = h.call(t, ctx, proto.Whois, map[string]any{"user": "ana"})
	if d["claimed"] != true || d["public_key"] != key || d["fingerprint"] != account.Fingerprint(key) || d["user"] != "ana" {
		t.Fatalf("whois ana: %v", d)
	}
	h.call(t, ctx, proto.Login, map[string]any{"user": "open"})
	d, _ = h.call(t, ctx, proto.Whois, map[string]any{"user": "open"})
	if d["claimed"] != false || d["public_key"] != "" || d["fingerprint"] != "" {
		t.Fatalf("whois open: %v", d)
	}
	d, pubs = h.call(t, ctx, proto.Whois, map[string]any{"user": "nobody"})
	wantErro(t, d, pubs, `user "nobody" does not exist`)

	// A key on an open name, or a malformed key, is refused.
	d, pubs = h.call(t, ctx, proto.Login, map[string]any{"user": "open", "public_key": key})
	wantErro(t, d, pubs, "claimed name")
	d, pubs = h.call(t, ctx, proto.Login, map[string]any{"user": "eve", "password": "pw", "public_key": "c2hvcnQ="})
	wantErro(t, d, pubs, "32-byte X25519")
	if _, ok := h.Store.Account("eve"); ok {
		t.Fatal("a refused login claimed its name")
	}

	// A new key through a login with the password replaces the old one.
	key2 := base64.StdEncoding.EncodeToString(append(make([]byte, 31), 7))
	h.call(t, ctx, proto.Login, map[string]any{"user": "ana", "password": "pw", "public_key": key2})
	if d, _ = h.call(t, ctx, proto.Whois, map[string]any{"user": "ana"}); d["public_key"] != key2 {
		t.Fatalf("whois after a new key: %v", d)
	}
}

// Accounts and tokens are in the store: they survive a restart, and the
// store holds no token itself.
func TestAccountsSurviveARestart(t *testing.T) {
	dir, clk := t.TempDir(), newClock()
	h := accountsHandler(t, dir, testAccounts(), clk)
	token := claim(t, h, "ana", "pw")
	h.Store.Close()
	h = accountsHandler(t, dir, testAccounts(), clk)
	ctx := context.Background()
	h.call(t, ctx, proto.Channel, map[string]any{"channel": "g"})
	if d, _ := h.call(t, ctx, proto.Publish, map[string]any{"user": "ana", "channel": "g", "message": "hi", "token": token}); d["status"] != proto.StatusOK {
		t.Fatalf("token after restart: %v", d)
	}
	d, pubs := h.call(t, ctx, proto.Login, map[string]any{"user": "ana", "password": "other"})
	wantErro(t, d, pubs, "wrong password")
}

func TestRequireAccounts(t *testing.T) {
	cfg := testAccounts()
	cfg.Require = true
	h := accountsHandler(t, t.TempDir(), cfg, newClock())
	ctx := context.Background()
	h.call(t, ctx, proto.Channel, map[string]any{"channel": "g"})
	d, pubs := h.call(t, ctx, proto.Login, map[string]any{"user": "open"})
	wantErro(t, d, pubs, "requires accounts")
	d, pubs = h.call(t, ctx, proto.Publish, map[string]any{"user": "open", "channel": "g", "message": "x"})
	wantErro(t, d, pubs, "requires accounts")
	d, pubs = h.call(t, ctx, proto.Message, map[string]any{"src": "open", "dst": "open", "message": "x"})
	wantErro(t, d, pubs, "requires accounts")
	d, pubs = h.call(t, ctx, proto.History, map[string]any{"user": "open", "peer": "ana"})
	wantErro(t, d, pubs, "requires accounts")
	token := claim(t, h, "ana", "pw")
	if d, _ := h.call(t, ctx, proto.Publish, map[string]any{"user": "ana", "channel": "g", "message": "x", "token": token}); d["status"] != proto.StatusOK {
		t.Fatalf("claimed name's post: %v", d)
	}
	if d, _ := h.call(t, ctx, proto.History, map[string]any{"channel": "g"}); d["status"] != proto.StatusOK {
		t.Fatalf("channel history is not acting as anyone: %v", d)
	}
}

func TestFailedLoginsAreLimited(t *testing.T) {
	clk := newClock()
	h := accountsHandler(t, t.TempDir(), testAccounts(), clk)
	ctx := context.Background()
	claim(t, h, "ana", "pw")
	for range 5 {
		d, pubs := h.call(t, ctx, proto.Login, map[string]any{"user": "ana", "password": "guess"})
		wantErro(t, d, pubs, "wrong password")
	}
	// Now even the right password waits for the window to end.
	d, pubs := h.call(t, ctx, proto.Login, map[string]any{"user": "ana", "password": "pw"})
	wantErro(t, d, pubs, `too many failed login attempts for "ana"`)
	if wait, _, _ := d.Int(proto.Login, "retry_after"); wait != 60 {
		t.Fatalf("retry_after %v, want 60", d["retry_after"])
	}
	clk.Advance(time.Minute)
	claim(t, h, "ana", "pw")

	// Per client: 20 wrong passwords over many names block the client,
	// not the names, and not another client.
	for i := range 20 {
		name := string(rune('a'+i)) + "-user"
		claim(t, h, name, "pw")
		d, pubs := h.call(t, withClient(ctx, "front\x00mallory"), proto.Login, map[string]any{"user": name, "password": "guess"})
		wantErro(t, d, pubs, "wrong password")
	}
	d, pubs = h.call(t, withClient(ctx, "front\x00mallory"), proto.Login, map[string]any{"user": "ana", "password": "pw"})
	wantErro(t, d, pubs, "too many failed login attempts from this client")
	if d, _ := h.call(t, withClient(ctx, "front\x00other"), proto.Login, map[string]any{"user": "ana", "password": "pw"}); d["status"] != proto.StatusSuccess {
		t.Fatalf("another client is limited too: %v", d)
	}
}
