package e2e

import (
	"strings"
	"testing"

	"chat/account"
	"chat/internal/clustertest"
	"chat/proto"
	"chat/roles/server"
	"chat/transport"
)

// cheapAccounts makes password hashes cheap (argon2id's least memory).
func cheapAccounts(cfg *server.Config) {
	cfg.Accounts.Hash = account.HashConfig{Time: 1, Memory: 8, Threads: 1}
}

func wantErroSaying(t testing.TB, d proto.Data, says string) {
	t.Helper()
	if msg, _ := d["message"].(string); d["status"] != proto.StatusError || !strings.Contains(msg, says) {
		t.Fatalf("want erro saying %q, got %v", says, d)
	}
}

// Accounts replicate like everything else: a name claimed on server-1
// is protected on server-3, its token works on every server, and a
// logout on one server ends the token on all of them.
func TestReplicatedAccountsAndTokens(t *testing.T) {
	c := clustertest.StartReplicated(t, 3, cheapAccounts)
	s1, s2, s3 := direct(t, c, 0), direct(t, c, 1), direct(t, c, 2)

	d := callOK(t, s1, proto.Login, proto.Data{"user": "ana", "password": "pw"})
	token, _ := d["token"].(string)
	if d["status"] != proto.StatusSuccess || d["claimed"] != true || token == "" {
		t.Fatalf("claiming login on server-1: %v", d)
	}
	wantStatus(t, callOK(t, s2, proto.Login, proto.Data{"user": "bia"}), proto.StatusSuccess)
	wantStatus(t, callOK(t, s2, proto.Channel, proto.Data{"channel": "lab"}), proto.StatusSuccess)

	// Server-3 knows the claim at once (its reads pass the barrier).
	wantErroSaying(t, callOK(t, s3, proto.Login, proto.Data{"user": "ana"}), "protected by a password")
	wantErroSaying(t, callOK(t, s3, proto.Login, proto.Data{"user": "ana", "password": "guess"}), `wrong password for "ana"`)
	if d := callOK(t, s3, proto.Whois, proto.Data{"user": "ana"}); d["claimed"] != true {
		t.Fatalf("whois on server-3: %v", d)
	}
	wantErroSaying(t, callOK(t, s3, proto.Publish, proto.Data{"user": "ana", "channel": "lab", "message": "fake"}), "protected by a password")
	wantErroSaying(t, callOK(t, s2, proto.Message, proto.Data{"src": "ana", "dst": "bia", "message": "fake"}), "protected by a password")

	// The token of server-1 works on server-3 and server-2.
	wantStatus(t, callOK(t, s3, proto.Publish, proto.Data{"user": "ana", "channel": "lab", "message": "real", "token": token}), proto.StatusOK)
	wantStatus(t, callOK(t, s2, proto.Message, proto.Data{"src": "ana", "dst": "bia", "message": "psst", "token": token}), proto.StatusOK)
	if d := callOK(t, s3, proto.History, proto.Data{"user": "ana", "peer": "bia", "token": token}); len(d["messages"].([]any)) != 1 {
		t.Fatalf("ana's DM history on server-3: %v", d)
	}
	wantErroSaying(t, callOK(t, s1, proto.History, proto.Data{"user": "ana", "peer": "bia"}), "protected by a password")

	// A logout on server-2 ends the token everywhere.
	wantStatus(t, callOK(t, s2, proto.Logout, proto.Data{"user": "ana", "token": token}), proto.StatusOK)
	for _, s := range []*transport.Client{s1, s2, s3} {
		wantErroSaying(t, callOK(t, s, proto.Publish, proto.Data{"user": "ana", "channel": "lab", "message": "after", "token": token}), `not valid for user "ana"`)
		wantErroSaying(t, callOK(t, s, proto.History, proto.Data{"user": "ana", "peer": "bia", "token": token}), `not valid for user "ana"`)
	}
	posts := callOK(t, s1, proto.History, proto.Data{"channel": "lab"})["messages"].([]any)
	if len(posts) != 1 {
		t.Fatalf("the channel holds %d posts, want only ana's real one", len(posts))
	}
}
