package e2e

import (
	"fmt"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"

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
	expectError(t, callOK(t, s3, proto.Login, proto.Data{"user": "ana"}), "protected by a password")
	expectError(t, callOK(t, s3, proto.Login, proto.Data{"user": "ana", "password": "guess"}), `wrong password for "ana"`)
	if d := callOK(t, s3, proto.Whois, proto.Data{"user": "ana"}); d["claimed"] != true {
		t.Fatalf("whois on server-3: %v", d)
	}
	expectError(t, callOK(t, s3, proto.Publish, proto.Data{"user": "ana", "channel": "lab", "message": "fake"}), "protected by a password")
	expectError(t, callOK(t, s2, proto.Message, proto.Data{"src": "ana", "dst": "bia", "message": "fake"}), "protected by a password")

	// The token of server-1 works on server-3 and server-2.
	wantStatus(t, callOK(t, s3, proto.Publish, proto.Data{"user": "ana", "channel": "lab", "message": "real", "token": token}), proto.StatusOK)
	wantStatus(t, callOK(t, s2, proto.Message, proto.Data{"src": "ana", "dst": "bia", "message": "psst", "token": token}), proto.StatusOK)
	if d := callOK(t, s3, proto.History, proto.Data{"user": "ana", "peer": "bia", "token": token}); len(d["messages"].([]any)) != 1 {
		t.Fatalf("ana's DM history on server-3: %v", d)
	}
	expectError(t, callOK(t, s1, proto.History, proto.Data{"user": "ana", "peer": "bia"}), "protected by a password")

	// A logout on server-2 ends the token everywhere.
	wantStatus(t, callOK(t, s2, proto.Logout, proto.Data{"user": "ana", "token": token}), proto.StatusOK)
	for _, s := range []*transport.Client{s1, s2, s3} {
		expectError(t, callOK(t, s, proto.Publish, proto.Data{"user": "ana", "channel": "lab", "message": "after", "token": token}), `not valid for user "ana"`)
		expectError(t, callOK(t, s, proto.History, proto.Data{"user": "ana", "peer": "bia", "token": token}), `not valid for user "ana"`)
	}
	posts := callOK(t, s1, proto.History, proto.Data{"channel": "lab"})["messages"].([]any)
	if len(posts) != 1 {
		t.Fatalf("the channel holds %d posts, want only ana's real one", len(posts))
	}
}

// The measurement, through the broker as a client of the
// standard sends it: from alice's connection, `publish user=bob` and
// `message src=bob` were OK and subscribers saw bob's post. With bob's
// name claimed, both are refused and nothing reaches the subscribers;
// bob's own post, with his token, does. Wrong passwords through the
// broker are limited per client (the client id behind the broker).
func TestImpersonationThroughTheBroker(t *testing.T) {
	c := clustertest.StartWith(t, 1, clustertest.BrokerConfig(), cheapAccounts)
	alice, bob := newClient(t, c.Broker.FrontAddr()), newClient(t, c.Broker.FrontAddr())
	aliceToken, _ := call(t, alice, proto.Login, proto.Data{"user": "alice", "password": "a"})["token"].(string)
	bobToken, _ := call(t, bob, proto.Login, proto.Data{"user": "bob", "password": "b"})["token"].(string)
	call(t, alice, proto.Login, proto.Data{"user": "carol"})
	call(t, alice, proto.Channel, proto.Data{"channel": "g"})

	got := clustertest.Subscribe(t, c.Broker.PubOutAddr(), "g", "carol")
	publishUntilReceived(t, got, func() {
		call(t, alice, proto.Publish, proto.Data{"user": "carol", "channel": "g", "message": "warm-up"})
	})

	for _, token := range []string{"", aliceToken} {
		d := proto.Data{"user": "bob", "channel": "g", "message": "fake post"}
		m := proto.Data{"src": "bob", "dst": "carol", "message": "fake dm"}
		if token != "" {
			d["token"], m["token"] = token, token
		}
		expectError(t, call(t, alice, proto.Publish, d), "bob")
		expectError(t, call(t, alice, proto.Message, m), "bob")
	}
	expectStatus(t, call(t, bob, proto.Message, proto.Data{"src": "bob", "dst": "carol", "message": "real dm", "token": bobToken}), proto.StatusOK)
	expectStatus(t, call(t, bob, proto.Publish, proto.Data{"user": "bob", "channel": "g", "message": "real post", "token": bobToken}), proto.StatusOK)
	for _, want := range []string{"real dm", "real post"} {
		select {
		case f := <-got:
			var d proto.Data
			if len(f) == 2 {
				msgpack.Unmarshal(f[1], &d)
			}
			if text, _ := d["message"].(string); text != want {
				t.Fatalf("subscriber got %q, want %q (an impersonation was published)", text, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("no publication %q", want)
		}
	}

	// 20 wrong passwords from alice's connection (for 20 names, under
	// the limit of 5 per name) block it, and not bob's.
	for i := range 20 {
		name := fmt.Sprint("user-", i)
		expectStatus(t, call(t, bob, proto.Login, proto.Data{"user": name, "password": "right"}), proto.StatusSuccess)
		expectError(t, call(t, alice, proto.Login, proto.Data{"user": name, "password": "guess"}), "wrong password")
	}
	d := call(t, alice, proto.Login, proto.Data{"user": "carol2", "password": "x"})
	expectError(t, d, "too many failed login attempts from this client")
	if _, ok := d["retry_after"]; !ok {
		t.Fatalf("no retry_after: %v", d)
	}
	expectStatus(t, call(t, bob, proto.Login, proto.Data{"user": "carol2", "password": "x"}), proto.StatusSuccess)
}
