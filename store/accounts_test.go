package store

import (
	"errors"
	"testing"
	"time"
)

// The changes of an account's life: a claim with token t1, a login with
// token t2 and a key, the logout of t1.
func accountLife(t *testing.T, s *Store, expires time.Time) {
	t.Helper()
	mustApply(t, s, Change{Login: &Login{User: "ana", Claim: true, PasswordHash: "$hash", PublicKey: "key1",
		Token: &Token{Hash: TokenHash("t1"), User: "ana", Expires: expires}}})
	mustApply(t, s, Change{Login: &Login{User: "ana", PublicKey: "key2",
		Token: &Token{Hash: TokenHash("t2"), User: "ana", Expires: expires}}})
	mustApply(t, s, Change{AuthToken: TokenHash("t1"), Logout: &Logout{User: "ana"}})
}

// wantAccount checks ana's account and which of her tokens are live.
func wantAccount(t *testing.T, s *Store, key string, live map[string]bool) {
	t.Helper()
	acc, ok := s.Account("ana")
	if key == "" {
		if ok {
			t.Fatalf("ana is claimed: %+v", acc)
		}
	} else if !ok || acc.PasswordHash != "$hash" || acc.PublicKey != key {
		t.Fatalf("ana's account %+v (claimed %v), want key %q", acc, ok, key)
	}
	for token, want := range live {
		if err := s.CheckToken("ana", token, time.Now()); (err == nil) != want {
			t.Errorf("token %s: %v, want live %v", token, err, want)
		}
	}
}

func TestAccountChecks(t *testing.T) {
	s, path := openTest(t)
	later := time.Now().Add(time.Hour)
	accountLife(t, s, later)
	wantAccount(t, s, "key2", map[string]bool{"t1": false, "t2": true})

	// A second claim, a key for an open name, a post without ana's token.
	_, err := s.Apply(ctx, Change{Login: &Login{User: "ana", Claim: true, PasswordHash: "$other", Token: &Token{Hash: "x", User: "ana", Expires: later}}})
	if !errors.Is(err, ErrClaimed) {
		t.Fatalf("second claim: %v", err)
	}
	if _, err := s.Apply(ctx, login("ana")); !errors.Is(err, ErrClaimed) {
		t.Fatalf("a plain login of a claimed name: %v", err)
	}
	if _, err := s.Apply(ctx, Change{Login: &Login{User: "bob", PublicKey: "k"}}); !errors.Is(err, ErrNotClaimed) {
		t.Fatalf("key for an open name: %v", err)
	}
	mustApply(t, s, create("g", "ana"))
	for _, token := range []string{"", TokenHash("t1"), TokenHash("nope")} {
		if _, err := s.Apply(ctx, Change{AuthToken: token, Message: &Message{Kind: Post, Channel: "g", From: "ana", Text: "x"}}); !errors.Is(err, ErrBadToken) {
			t.Fatalf("post with token %q: %v", token, err)
		}
	}
	if _, err := s.Apply(ctx, Change{AuthToken: TokenHash("t2"), Message: &Message{Kind: Post, Channel: "g", From: "ana", Text: "x", Timestamp: later}}); !errors.Is(err, ErrTokenExpired) {
		t.Fatalf("post at the token's expiry: %v", err)
	}
	mustApply(t, s, Change{AuthToken: TokenHash("t2"), Message: &Message{Kind: Post, Channel: "g", From: "ana", Text: "x"}})
	mustApply(t, s, post("g", "open", "no token needed"))

	// What is durable is what Open loads.
	s.Close()
	s = reopen(t, path)
	wantAccount(t, s, "key2", map[string]bool{"t1": false, "t2": true})
}

// Accounts replicate with the log: a replica that appends the entries
// has the same accounts and tokens.
func TestAccountsReplicate(t *testing.T) {
	s, _ := openTest(t)
	accountLife(t, s, time.Now().Add(time.Hour))
	r, _ := openTest(t)
	entries, err := s.EntriesAfter(ctx, 0, 100, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Append(ctx, entries); err != nil {
		t.Fatal(err)
	}
	wantAccount(t, r, "key2", map[string]bool{"t1": false, "t2": true})
}

// TruncateAfter undoes what the dropped entries did to the accounts.
func TestTruncateUndoesAccounts(t *testing.T) {
	s, _ := openTest(t)
	accountLife(t, s, time.Now().Add(time.Hour))
	if err := s.TruncateAfter(2); err != nil { // the logout goes
		t.Fatal(err)
	}
	wantAccount(t, s, "key2", map[string]bool{"t1": true, "t2": true})
	if err := s.TruncateAfter(1); err != nil { // the second login goes
		t.Fatal(err)
	}
	wantAccount(t, s, "key1", map[string]bool{"t1": true, "t2": false})
	if err := s.TruncateAfter(0); err != nil { // the claim goes
		t.Fatal(err)
	}
	wantAccount(t, s, "", map[string]bool{"t1": false})
}
