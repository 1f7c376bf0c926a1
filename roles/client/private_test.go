package client

import (
	"os"
	"strings"
	"testing"
	"time"

	"chat/account"
	"chat/clock"
	"chat/internal/clustertest"
	"chat/internal/fakeclock"
	"chat/internal/poll"
	"chat/privatedm"
	"chat/proto"
	"chat/roles/server"
	"chat/transport"
)

// Issue 11: accounts and private direct messages, as the client does
// them. The server side has its own tests (roles/server/accounts_test.go).

// TestMain keeps every key file the tests make out of the home directory.
func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "chat-client-test-")
	if err != nil {
		panic(err)
	}
	os.Setenv(privatedm.ConfigDirEnv, dir)
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// startAccounts is startSystem with cheap password hashes; clk, when not
// nil, is the server's clock.
func startAccounts(t *testing.T, clk clock.Source) system {
	t.Helper()
	c := clustertest.StartWith(t, 1, clustertest.BrokerConfig(), func(cfg *server.Config) {
		cfg.Accounts.Hash = account.HashConfig{Time: 1, Memory: 8, Threads: 1}
		cfg.Accounts.TokenTTL = time.Hour
		if clk != nil {
			cfg.Clock = clk
		}
	})
	return system{front: c.Broker.FrontAddr(), pubOut: c.Broker.PubOutAddr(), direct: c.Servers[0].Addr()}
}

// machine is the config of a client on its own machine: its own key
// directory, and password for every /login ("" : none).
func machine(t *testing.T, sys system, password string) Config {
	cfg := testConfig([]string{sys.front}, sys.pubOut)
	cfg.Password, cfg.KeyDir = password, t.TempDir()
	return cfg
}

// rawCall sends one request straight to a server, as any program could.
func rawCall(t *testing.T, addr, service string, data proto.Data) (proto.Data, error) {
	t.Helper()
	c, err := transport.NewClient(transport.DefaultClientConfig(addr), clustertest.Log())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return Call(t.Context(), c, &clock.Lamport{}, service, data)
}

func TestLoginWithPasswordClaimsTheName(t *testing.T) {
	sys := startAccounts(t, nil)
	alice := startUser(t, machine(t, sys, "alice-pw"))
	alice.do(t, "/login alice", "*** logged in as alice (account claimed now)")
	alice.out.waitFor(t, "*** new key pair for private direct messages in ", 1)

	// Another session with the wrong password, or none, is refused.
	mallory := startUser(t, machine(t, sys, "guess"))
	mallory.do(t, "/login alice", `*** wrong password for "alice"`)
	open := startUser(t, testConfig([]string{sys.front}, sys.pubOut))
	open.do(t, "/login alice", `*** user "alice" is protected by a password: log in with its password`)
	mallory.do(t, "/whoami", "*** you are not logged in")

	// The session's token goes with its posts; a request without it is refused.
	alice.do(t, "/join g", "joined #g")
	alice.do(t, "hello as alice", "#g <alice> hello as alice")
	_, err := rawCall(t, sys.direct, proto.Publish, proto.Data{"user": "alice", "channel": "g", "message": "forged"})
	if err == nil || !strings.Contains(err.Error(), "send the token of its login") {
		t.Fatalf("a post as alice without her token: %v", err)
	}

	// A second machine of alice's logs in with her password.
	second := startUser(t, machine(t, sys, "alice-pw"))
	second.do(t, "/login alice", "*** logged in as alice (account)")
	second.do(t, "/join g", "joined #g")
	second.do(t, "from the second machine", "#g <alice> from the second machine")

	// /logout ends the token: the session is no longer alice.
	alice.do(t, "/logout", "*** logged out alice: the session's token is revoked on every server")
	alice.do(t, "after logout", "log in first")
	second.do(t, "still in", "#g <alice> still in")
}

func TestPrivateDirectMessages(t *testing.T) {
	sys := startAccounts(t, nil)
	alice := startUser(t, machine(t, sys, "alice-pw"))
	bob := startUser(t, machine(t, sys, "bob-pw"))
	carol := startUser(t, testConfig([]string{sys.front}, sys.pubOut)) // an open name
	alice.do(t, "/login alice", "logged in as alice (account claimed now)")
	bob.do(t, "/login bob", "logged in as bob (account claimed now)")
	carol.do(t, "/login carol", "logged in as carol")

	// Two eavesdroppers: one on bob's topic, one on every topic. Wait
	// until both hear a direct message to bob.
	onBob, onAll := clustertest.Eavesdrop(t, sys.pubOut, "bob"), clustertest.Eavesdrop(t, sys.pubOut)
	poll.WaitFor(t, 10*time.Second, "the eavesdroppers to hear a direct message to bob", func() bool {
		rawCall(t, sys.direct, proto.Message, proto.Data{"src": "warm", "dst": "bob", "message": "warm-up"})
		return strings.Contains(onBob.String(), "warm-up") && strings.Contains(onAll.String(), "warm-up")
	})

	alice.do(t, "/msg bob the plan is at noon", "[private] -> *bob* the plan is at noon")
	bob.out.waitFor(t, "[private] *alice* the plan is at noon", 1)
	bob.do(t, "/msg alice ok, noon", "[private] -> *alice* ok, noon")
	alice.out.waitFor(t, "[private] *bob* ok, noon", 1)
	poll.WaitFor(t, 10*time.Second, "the eavesdroppers to hear both messages", func() bool {
		return strings.Count(onAll.String(), privatedm.Prefix) >= 2 && strings.Count(onBob.String(), privatedm.Prefix) >= 1
	})
	for what, heard := range map[string]string{"bob's topic": onBob.String(), "every topic": onAll.String()} {
		if strings.Contains(heard, "noon") {
			t.Errorf("an eavesdropper on %s read a private message:\n%s", what, heard)
		}
	}

	// Both read the conversation in history; the servers hold only ciphertext.
	bob.do(t, "/history @alice", "[private] -> *alice* ok, noon")
	if !strings.Contains(bob.out.String(), "[private] *alice* the plan is at noon") {
		t.Errorf("bob's history lacks alice's message:\n%s", bob.out)
	}
	alice.do(t, "/history @bob", "[private] *bob* ok, noon")
	login, err := rawCall(t, sys.direct, proto.Login, proto.Data{"user": "bob", "password": "bob-pw"})
	if err != nil {
		t.Fatal(err)
	}
	reply, err := rawCall(t, sys.direct, proto.History, proto.Data{"user": "bob", "peer": "alice", "token": login["token"]})
	if err != nil {
		t.Fatal(err)
	}
	if stored := string(proto.Envelope{Data: reply}.Encode()); strings.Contains(stored, "noon") || strings.Count(stored, privatedm.Prefix) != 2 {
		t.Fatalf("the servers hold more than the two sealed messages: %q", stored)
	}

	// Another user's DM history is refused, whatever the client.
	if _, err := rawCall(t, sys.direct, proto.History, proto.Data{"user": "bob", "peer": "alice"}); err == nil {
		t.Fatal("bob's DM history was given without his token")
	}

	// To and from an open name: in the clear, and marked so.
	alice.do(t, "/msg carol hi carol", "[not private] -> *carol* hi carol")
	carol.out.waitFor(t, "[not private] *alice* hi carol", 1)
	carol.do(t, "/msg bob from carol", "[not private] -> *bob* from carol")
	if !strings.Contains(carol.out.String(), "you logged in without a password") {
		t.Errorf("carol was not told that her DMs are not private:\n%s", carol.out)
	}
	bob.out.waitFor(t, "[not private] *carol* from carol", 1)

	// A sealed text that does not open is shown as such, never as text;
	// and to a user without a key pair, as one to log in for.
	if _, err := rawCall(t, sys.direct, proto.Message, proto.Data{"src": "carol", "dst": "bob", "message": privatedm.Prefix + "AAAA"}); err != nil {
		t.Fatal(err)
	}
	bob.out.waitFor(t, "[private, could not be opened: ", 1)
	someone := mustGenerate(t)
	sealed, err := privatedm.Seal("for carol", &someone.Public, mustGenerate(t))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rawCall(t, sys.direct, proto.Message, proto.Data{"src": "dave", "dst": "carol", "message": sealed}); err != nil {
		t.Fatal(err)
	}
	carol.out.waitFor(t, "[private: log in with your password to read it] *dave*", 1)

	// To oneself, sealed to one's own key.
	alice.do(t, "/msg alice note to self", "[private] *alice* note to self")
	alice.do(t, "/history @alice", "[private] *alice* note to self\n")

	// Too long to seal within the limit on message text.
	alice.do(t, "/msg bob "+strings.Repeat("x", 3027), "message not sent: sealed, 3027 bytes of text take 4097 bytes, over the limit of 4096; a private message holds at most 3026 bytes")
	alice.do(t, "/msg bob "+strings.Repeat("y", 3026), "[private] -> *bob* yyy")
}

func mustGenerate(t *testing.T) privatedm.KeyPair {
	kp, err := privatedm.Generate()
	if err != nil {
		t.Fatal(err)
	}
	return kp
}

func TestWhois(t *testing.T) {
	sys := startAccounts(t, nil)
	aliceCfg := machine(t, sys, "alice-pw")
	alice := startUser(t, aliceCfg)
	alice.do(t, "/login alice", "logged in as alice (account claimed now)")
	carol := startUser(t, testConfig([]string{sys.front}, sys.pubOut))
	carol.do(t, "/login carol", "logged in as carol")

	kp, _, err := privatedm.LoadOrCreate(aliceCfg.KeyDir, "alice")
	if err != nil {
		t.Fatal(err)
	}
	carol.do(t, "/whois alice", "*** alice: account (claimed), key fingerprint "+privatedm.Fingerprint(&kp.Public)+"\n")
	alice.do(t, "/whois carol", "*** carol: open name (no account), no key: DMs to carol are not private\n")
	alice.do(t, "/whois alice", "*** alice: account (claimed), key fingerprint "+privatedm.Fingerprint(&kp.Public)+"\n")
	alice.do(t, "/whois nobody", `*** user "nobody" does not exist`)
	alice.do(t, "/whois", "usage: /whois USER")

	// A claimed name without a key (logged in by another program).
	if _, err := rawCall(t, sys.direct, proto.Login, proto.Data{"user": "erin", "password": "erin-pw"}); err != nil {
		t.Fatal(err)
	}
	carol.do(t, "/whois erin", "*** erin: account (claimed), no key: DMs to erin are not private\n")

	// alice logs in from another machine: her key changes, and carol,
	// who knew the old one, is told.
	carol.do(t, "/msg alice hello", "[not private] -> *alice* hello") // carol has no key pair
	other := startUser(t, machine(t, sys, "alice-pw"))
	other.do(t, "/login alice", "logged in as alice (account)")
	carol.do(t, "/whois alice", "*** the key of alice changed: fingerprint ")
}

// The token of a session expires (or a server does not know it): the
// client logs in again by itself with the password it kept, and the
// request goes through.
func TestLogsInAgainWhenTheTokenIsRefused(t *testing.T) {
	clk := fakeclock.New(time.Now())
	sys := startAccounts(t, clk)
	alice := startUser(t, machine(t, sys, "alice-pw"))
	alice.do(t, "/login alice", "logged in as alice (account claimed now)")
	alice.do(t, "/join g", "joined #g")
	alice.do(t, "before", "#g <alice> before")

	clk.Advance(2 * time.Hour) // the token lasts an hour (startAccounts)
	alice.do(t, "after the token expired", "#g <alice> after the token expired")
	for _, want := range []string{
		`*** the server did not take the session's token (the token of user "alice" has expired: log in again); logging in again as alice`,
		"*** logged in again as alice",
	} {
		if !strings.Contains(alice.out.String(), want) {
			t.Errorf("alice was not told %q:\n%s", want, alice.out)
		}
	}
	if n := strings.Count(alice.out.String(), "after the token expired"); n != 1 {
		t.Errorf("the post is shown %d times, want once:\n%s", n, alice.out)
	}

	// The same for a direct message and its history.
	bob := startUser(t, machine(t, sys, "bob-pw"))
	bob.do(t, "/login bob", "logged in as bob (account claimed now)")
	clk.Advance(2 * time.Hour)
	alice.do(t, "/msg bob later", "[private] -> *bob* later")
	bob.out.waitFor(t, "[private] *alice* later", 1)
	bob.do(t, "/history @alice", "[private] *alice* later")
	if n := strings.Count(alice.out.String(), "logged in again as alice"); n != 2 {
		t.Errorf("alice logged in again %d times, want 2:\n%s", n, alice.out)
	}
}

// Tokens replicate: after the server a session logged in at goes away, its
// token works on the next one, with no new login.
func TestTokenWorksAfterAFailover(t *testing.T) {
	c := clustertest.StartReplicated(t, 3, func(cfg *server.Config) {
		cfg.Accounts.Hash = account.HashConfig{Time: 1, Memory: 8, Threads: 1}
	})
	leader := c.Leader()
	first, second := (leader+1)%3, (leader+2)%3 // followers: stopping one needs no election
	cfg := testConfig([]string{c.Servers[first].Addr(), c.Servers[second].Addr()}, c.Broker.PubOutAddr())
	cfg.Password, cfg.KeyDir = "alice-pw", t.TempDir()
	cfg.RequestTimeout, cfg.DialTimeout = 500*time.Millisecond, 500*time.Millisecond
	alice := startUser(t, cfg)
	alice.do(t, "/login alice", "logged in as alice (account claimed now)")
	alice.do(t, "/join g", "joined #g")
	alice.do(t, "before", "#g <alice> before")

	c.Stop(first)
	alice.do(t, "after", "#g <alice> after")
	if !strings.Contains(alice.out.String(), "did not answer, trying "+c.Configs[second].Listen) {
		t.Errorf("the client did not move to the second server:\n%s", alice.out)
	}
	if strings.Contains(alice.out.String(), "logging in again") {
		t.Errorf("the token did not work on the second server:\n%s", alice.out)
	}
}
