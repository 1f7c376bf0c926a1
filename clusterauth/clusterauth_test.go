package clusterauth

import (
	"bytes"
	"encoding/hex"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"
)

const secret = "a-test-cluster-key-of-enough-length"

func member(t *testing.T, secret string, now *time.Time) *Member {
	t.Helper()
	m, err := New(secret, DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	if now != nil {
		m.now = func() time.Time { return *now }
	}
	return m
}

func TestGoodMACAccepted(t *testing.T) {
	a, b := member(t, secret, nil), member(t, secret, nil)
	frame := []byte("hello")
	wrapped, _ := a.Wrap(Request, frame)
	got, _, err := b.Unwrap(Request, wrapped)
	if err != nil || !bytes.Equal(got, frame) {
		t.Fatalf("Unwrap = %q, %v; want %q", got, err, frame)
	}
}

func TestWrongKeyRefused(t *testing.T) {
	a, b := member(t, secret, nil), member(t, secret+"x", nil)
	wrapped, _ := a.Wrap(Request, []byte("hello"))
	if _, _, err := b.Unwrap(Request, wrapped); !errors.Is(err, ErrBadMAC) {
		t.Fatalf("err = %v, want ErrBadMAC", err)
	}
}

func TestTamperedRefused(t *testing.T) {
	a, b := member(t, secret, nil), member(t, secret, nil)
	tag := a.Seal(Request, []byte("hello"))
	if err := b.Check(Request, tag, []byte("hellO")); !errors.Is(err, ErrBadMAC) {
		t.Fatalf("altered body: err = %v, want ErrBadMAC", err)
	}
	if err := b.Check(Publish, tag, []byte("hello")); !errors.Is(err, ErrBadMAC) {
		t.Fatalf("other channel: err = %v, want ErrBadMAC", err)
	}
	tag.Time++
	if err := b.Check(Request, tag, []byte("hello")); !errors.Is(err, ErrBadMAC) {
		t.Fatalf("altered time: err = %v, want ErrBadMAC", err)
	}
	if err := b.Check(Request, Tag{Nonce: []byte{1}}, []byte("hello")); !errors.Is(err, ErrMalformed) {
		t.Fatalf("short nonce: err = %v, want ErrMalformed", err)
	}
}

func TestOldTimestampRefused(t *testing.T) {
	now := time.Now()
	a, b := member(t, secret, &now), member(t, secret, nil)
	now = now.Add(-DefaultConfig().MaxSkew - time.Second)
	if err := b.Check(Request, a.Seal(Request, []byte("x")), []byte("x")); !errors.Is(err, ErrStale) {
		t.Fatalf("old: err = %v, want ErrStale", err)
	}
	now = time.Now().Add(DefaultConfig().MaxSkew + time.Second)
	if err := b.Check(Request, a.Seal(Request, []byte("x")), []byte("x")); !errors.Is(err, ErrStale) {
		t.Fatalf("from the future: err = %v, want ErrStale", err)
	}
}

func TestReplayRefused(t *testing.T) {
	a, b := member(t, secret, nil), member(t, secret, nil)
	wrapped, _ := a.Wrap(Heartbeat, []byte("beat"))
	if _, _, err := b.Unwrap(Heartbeat, wrapped); err != nil {
		t.Fatal(err)
	}
	if _, _, err := b.Unwrap(Heartbeat, wrapped); !errors.Is(err, ErrReplayed) {
		t.Fatalf("replay: err = %v, want ErrReplayed", err)
	}
}

// Messages overtaking each other within the window are all accepted,
// once each; one later than the window is refused.
func TestReplayWindow(t *testing.T) {
	a, b := member(t, secret, nil), member(t, secret, nil)
	n := DefaultConfig().Reorder
	tags := make([]Tag, 3*n)
	for i := range tags {
		tags[i] = a.Seal(Publish, []byte{byte(i)})
	}
	check := func(i int) error { return b.Check(Publish, tags[i], []byte{byte(i)}) }
	for i := 10; i < n/2; i++ { // 10 first, then 0..9 late
		if err := check(i); err != nil {
			t.Fatalf("%d: %v", i, err)
		}
	}
	for i := range 10 {
		if err := check(i); err != nil {
			t.Fatalf("late %d: %v", i, err)
		}
		if err := check(i); !errors.Is(err, ErrReplayed) {
			t.Fatalf("late %d twice: err = %v, want ErrReplayed", i, err)
		}
	}
	for i := n / 2; i < 3*n; i++ {
		if err := check(i); err != nil {
			t.Fatalf("%d: %v", i, err)
		}
	}
	if err := check(n); !errors.Is(err, ErrReplayed) {
		t.Fatalf("far behind the window: err = %v, want ErrReplayed", err)
	}
	if err := check(3*n - 5); !errors.Is(err, ErrReplayed) {
		t.Fatalf("replay in the window: err = %v, want ErrReplayed", err)
	}
}

func TestReplyBoundToItsRequest(t *testing.T) {
	client, server := member(t, secret, nil), member(t, secret, nil)
	_, req1 := client.Wrap(Request, []byte("one"))
	_, req2 := client.Wrap(Request, []byte("two"))
	reply := server.WrapReply(req1, []byte("answer"))
	if got, err := client.UnwrapReply(req1, reply); err != nil || string(got) != "answer" {
		t.Fatalf("UnwrapReply = %q, %v", got, err)
	}
	if _, err := client.UnwrapReply(req2, reply); !errors.Is(err, ErrBadMAC) {
		t.Fatalf("reply to another request: err = %v, want ErrBadMAC", err)
	}
	if _, err := client.UnwrapReply(req1, []byte("\x80")); !errors.Is(err, ErrMalformed) {
		t.Fatalf("plain reply: err = %v, want ErrMalformed", err)
	}
}

func TestFrames(t *testing.T) {
	a, b := member(t, secret, nil), member(t, secret, nil)
	frames := [][]byte{[]byte("general"), []byte("payload")}
	tag := a.SealFrames(Publish, frames)
	got, err := b.CheckFrames(Publish, append(frames, tag))
	if err != nil || len(got) != 2 || string(got[1]) != "payload" {
		t.Fatalf("CheckFrames = %q, %v", got, err)
	}
	// Moving the boundary between the frames changes the MAC.
	moved := [][]byte{[]byte("generalp"), []byte("ayload"), a.SealFrames(Publish, frames)}
	if _, err := b.CheckFrames(Publish, moved); !errors.Is(err, ErrBadMAC) {
		t.Fatalf("moved boundary: err = %v, want ErrBadMAC", err)
	}
	if _, err := b.CheckFrames(Publish, frames); !errors.Is(err, ErrMalformed) {
		t.Fatalf("no authenticator: err = %v, want ErrMalformed", err)
	}
}

func TestShortSecretRefused(t *testing.T) {
	if _, err := New("short", DefaultConfig()); err == nil {
		t.Fatal("a 5-character key was accepted")
	}
	if s := GenerateSecret(); len(s) != 43 {
		t.Fatalf("generated key %q has %d characters, want 43", s, len(s))
	}
}

// The senders remembered are bounded; a silent one is forgotten.
func TestSendersBounded(t *testing.T) {
	now := time.Now()
	cfg := DefaultConfig()
	cfg.MaxSenders = 2
	b, _ := New(secret, cfg)
	b.now = func() time.Time { return now }
	for i := range 2 {
		a := member(t, secret, &now)
		if err := b.Check(Request, a.Seal(Request, []byte{1}), []byte{1}); err != nil {
			t.Fatalf("sender %d: %v", i, err)
		}
	}
	c := member(t, secret, &now)
	if err := b.Check(Request, c.Seal(Request, []byte{1}), []byte{1}); !errors.Is(err, ErrTooMany) {
		t.Fatalf("third sender: err = %v, want ErrTooMany", err)
	}
	now = now.Add(2*cfg.MaxSkew + time.Second)
	if err := b.Check(Request, c.Seal(Request, []byte{1}), []byte{1}); err != nil {
		t.Fatalf("after the others went silent: %v", err)
	}
}

// Known answer: the derivation and the MAC are HKDF-SHA256 and
// HMAC-SHA256 as PROTOCOL.md spells them; the expected bytes were
// computed with Python's hmac and hashlib modules, so another
// implementation can check itself against them.
func TestKnownAnswer(t *testing.T) {
	m := member(t, secret, nil)
	got := hex.EncodeToString(m.sum(Request, 1700000000000, make([]byte, NonceSize), [][]byte{[]byte("frame")}))
	const want = "33d2d0ed991f0f16797f1791f21de65063e892792aefef23de94cf4071b1d1da"
	if got != want {
		t.Fatalf("MAC = %s, want %s", got, want)
	}
}

// Refusals writes one line per kind per interval, counting the rest.
func TestRefusalsAreRateLimitedPerKind(t *testing.T) {
	var out bytes.Buffer
	m := member(t, secret, nil)
	r := NewRefusals(slog.New(slog.NewTextHandler(&out, nil)), m)
	for range 100 {
		r.Refused("a publication", ErrBadMAC)
	}
	r.Refused("a heartbeat", ErrBadMAC)
	if n := strings.Count(out.String(), "refused a publication"); n != 1 {
		t.Fatalf("%d lines for 100 refused publications, want 1:\n%s", n, out.String())
	}
	if !strings.Contains(out.String(), "refused a heartbeat") {
		t.Fatalf("the flood of publications hid the refused heartbeat:\n%s", out.String())
	}
	r.kinds["a publication"].last = time.Now().Add(-m.Config().LogEvery)
	r.Refused("a publication", ErrBadMAC)
	if !strings.Contains(out.String(), "refused_since_last_line=99") {
		t.Fatalf("the next line does not count the 99 left out:\n%s", out.String())
	}
}
