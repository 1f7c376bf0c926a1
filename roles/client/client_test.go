package client

import (
	"context"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"chat/internal/clustertest"
	"chat/internal/testnet"
	"chat/roles/broker"
)

// system is a broker and one server behind it, on kernel-chosen ports.
type system struct {
	front, pubOut, direct string
}

func startSystem(t *testing.T) system {
	t.Helper()
	c := clustertest.Start(t, 1)
	return system{front: c.Broker.FrontAddr(), pubOut: c.Broker.PubOutAddr(), direct: c.Servers[0].Addr()}
}

// screen is what a client shows, safe to read while the client writes.
type screen struct{ clustertest.Output }

// waitFor polls until the screen shows want n times.
func (s *screen) waitFor(t *testing.T, want string, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for strings.Count(s.String(), want) < n {
		if time.Now().After(deadline) {
			t.Fatalf("screen never showed %q (x%d):\n%s", want, n, s)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// user is a client running in the background, typed into through a pipe.
type user struct {
	in   *io.PipeWriter
	out  *screen
	done chan error // Run's result, once
}

func startUser(t *testing.T, cfg Config) *user {
	t.Helper()
	r, w := io.Pipe()
	u := &user{in: w, out: &screen{}, done: make(chan error, 1)}
	go func() {
		u.done <- Run(t.Context(), cfg, r, u.out, clustertest.Log())
		close(u.done)
	}()
	t.Cleanup(func() { w.Close(); <-u.done })
	return u
}

// do types a line and waits until the screen shows want.
func (u *user) do(t *testing.T, line, want string) {
	t.Helper()
	n := strings.Count(u.out.String(), want) + 1
	fmt.Fprintln(u.in, line)
	u.out.waitFor(t, want, n)
}

func testConfig(servers []string, sub string) Config {
	cfg := DefaultConfig()
	cfg.Servers, cfg.Sub = servers, sub
	return cfg
}

func TestPipedScript(t *testing.T) {
	sys := startSystem(t)
	var out screen
	script := "/login a\n/create g\n/join g\nhi\n/users\n/quit\nnever run\n"
	if err := Run(t.Context(), testConfig([]string{sys.front}, sys.pubOut), strings.NewReader(script), &out, clustertest.Log()); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"*** logged in as a", "*** channel #g created", "*** joined #g", "*** no messages in #g yet", "*** users (1): a"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
	if strings.Contains(out.String(), "never run") || strings.Count(out.String(), "***") != 6 {
		t.Errorf("unexpected output (an error, or a line after /quit):\n%s", out.String())
	}

	// At EOF (no /quit) the client stops too; history now has the post.
	out = screen{}
	if err := Run(t.Context(), testConfig([]string{sys.direct}, ""), strings.NewReader("/join g"), &out, clustertest.Log()); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "#g <a> hi") {
		t.Errorf("history on join lacks the post:\n%s", out.String())
	}
}

func TestTwoUsers(t *testing.T) {
	sys := startSystem(t)
	alice := startUser(t, testConfig([]string{sys.front}, sys.pubOut))
	bob := startUser(t, testConfig([]string{sys.front}, sys.pubOut))

	bob.do(t, "hello", "log in first")
	// IRC habits: "#geral" names geral, and /join creates a missing channel.
	bob.do(t, "/join #geral", "joined #geral")
	if !strings.Contains(bob.out.String(), "*** channel #geral created\n*** joined #geral\n") {
		t.Errorf("/join of a missing channel did not say it created it:\n%s", bob.out)
	}
	alice.do(t, "/login alice", "logged in as alice")
	alice.do(t, "/create geral", `channel "geral" already exists`)
	alice.do(t, "/create #geral2", "channel #geral2 created")
	alice.do(t, "/join geral", "joined #geral")
	bob.do(t, "/login bob", "logged in as bob")
	bob.do(t, "/join geral2", "joined #geral2")
	bob.do(t, "in geral2", "#geral2 <bob> in geral2") // bob sees his own post come back
	bob.do(t, "/join geral", "joined #geral")
	bob.do(t, "in geral", "#geral <bob> in geral")

	// The geral2 post went out first: had alice's subscription to geral
	// matched it by prefix, it would be on her screen before this one.
	alice.out.waitFor(t, "#geral <bob> in geral", 1)
	if strings.Contains(alice.out.String(), "in geral2") {
		t.Errorf("alice joined geral only, but sees geral2:\n%s", alice.out)
	}

	alice.do(t, "/msg bob psst", "-> *bob* psst")
	bob.out.waitFor(t, "*alice* psst", 1)
	bob.do(t, "/msg nobody x", `user "nobody" does not exist`)
	bob.do(t, "/history @alice", "*alice* psst")
	alice.do(t, "/history @bob", "-> *bob* psst")
	alice.do(t, "/history", "#geral <bob> in geral")
	alice.do(t, "/channels", "channels (2): geral, geral2")

	bob.do(t, "/leave geral", "now talking in #geral2")
	alice.do(t, "after leave", "#geral <alice> after leave")
	bob.do(t, "again", "#geral2 <bob> again")
	if strings.Contains(bob.out.String(), "after leave") {
		t.Errorf("bob left geral but still sees it:\n%s", bob.out)
	}

	fmt.Fprintln(alice.in, "/quit") // Run returns although the input stays open
	select {
	case err := <-alice.done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("/quit did not stop the client")
	}
}

func TestMovesOnToTheNextServer(t *testing.T) {
	sys := startSystem(t)
	dead := testnet.FreeEndpoint(t)
	cfg := testConfig([]string{dead, sys.direct}, "")
	cfg.RequestTimeout, cfg.DialTimeout = 300*time.Millisecond, 300*time.Millisecond
	u := startUser(t, cfg)
	u.do(t, "/login carol", "logged in as carol")
	want := fmt.Sprintf("server %s did not answer, trying %s", dead, sys.direct)
	if !strings.Contains(u.out.String(), want) {
		t.Errorf("the user was not told %q:\n%s", want, u.out)
	}
	u.do(t, "/users", "users (1): carol") // sticks to the server that answers
	if strings.Count(u.out.String(), "did not answer") != 1 {
		t.Errorf("went back to the dead server:\n%s", u.out)
	}
}

func TestNoServerAnswers(t *testing.T) {
	cfg := testConfig([]string{testnet.FreeEndpoint(t)}, "")
	cfg.RequestTimeout, cfg.DialTimeout, cfg.Attempts = 200*time.Millisecond, 200*time.Millisecond, 2
	u := startUser(t, cfg)
	u.do(t, "/users", "no server answered (2 tries)")
	if !strings.Contains(u.out.String(), "did not answer, trying again") {
		t.Errorf("the retry was not shown:\n%s", u.out)
	}
}

func TestBrokerWithoutServersIsRetriedThenShown(t *testing.T) {
	b, err := broker.Start(t.Context(), clustertest.BrokerConfig(), clustertest.Log())
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	cfg := testConfig([]string{b.FrontAddr()}, b.PubOutAddr())
	cfg.BusyRetries, cfg.BusyBackoff = 2, time.Millisecond
	u := startUser(t, cfg)
	u.do(t, "/login dave", "no server is available right now")
}

func TestRunStopsWhenContextEnds(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	r, w := io.Pipe()
	defer w.Close()
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, testConfig([]string{"tcp://127.0.0.1:1"}, "tcp://127.0.0.1:1"), r, io.Discard, nil)
	}()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after ctx ended")
	}
}

func TestValidate(t *testing.T) {
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatal(err)
	}
	bad := []func(*Config){
		func(c *Config) { c.Servers = nil },
		func(c *Config) { c.Servers = []string{""} },
		func(c *Config) { c.User = "a b" },
		func(c *Config) { c.RequestTimeout = 0 },
		func(c *Config) { c.Attempts = 0 },
		func(c *Config) { c.HistoryOnJoin = -1 },
	}
	for i, f := range bad {
		c := DefaultConfig()
		f(&c)
		if c.Validate() == nil {
			t.Errorf("bad config %d accepted", i)
		}
	}
}

// TestIRCHabits: what IRC users type. "/create #hash" made "##hash";
// /join of a missing channel failed; /leave needed its channel; there was
// no /me, /whoami or /window.
func TestIRCHabits(t *testing.T) {
	sys := startSystem(t)
	u := startUser(t, testConfig([]string{sys.front}, sys.pubOut))
	u.do(t, "/whoami", "*** you are not logged in (/login NAME); server "+sys.front+", in no channel")
	u.do(t, "/login ann", "logged in as ann")
	u.do(t, "/create #hash", "*** channel #hash created")
	u.do(t, "/channels", "channels (1): hash")
	u.do(t, "/join #hash", "joined #hash")
	u.do(t, "/me waves", "#hash * ann waves")
	u.do(t, "/join new", "*** channel #new created\n*** joined #new")
	u.do(t, "/whoami", "*** you are ann; server "+sys.front+", talking in #new")
	u.do(t, "/window", "*** windows: 1:#hash, 2:#new (current)")
	u.do(t, "/window 1", "*** now talking in #hash")
	u.do(t, "in hash", "#hash <ann> in hash")
	u.do(t, "/history #hash", "#hash <ann> in hash")
	u.do(t, "/window #new", "*** now talking in #new")
	u.do(t, "/window 3", "no window 3: you are in 2 channels")
	u.do(t, "/window other", "you are not in #other")
	u.do(t, "/leave", "*** left #new\n*** now talking in #hash")
	u.do(t, "/leave", "*** left #hash\n")
	u.do(t, "/leave", "*** you are in no channel")
	u.do(t, "/me", "usage: /me ACTION")
	if strings.Contains(u.out.String(), "##") {
		t.Errorf("a channel was named with two #:\n%s", u.out)
	}
}
