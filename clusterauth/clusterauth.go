// Package clusterauth is cluster membership: a cluster key, a secret
// every member (reference, broker, servers) is given, and the proof that
// a message comes from a member that holds it.
//
// The proof is a standard construction, HMAC-SHA256 (crypto/hmac), under
// a key derived from the secret with HKDF-SHA256 (crypto/hkdf); nothing
// here is home-made cryptography. Each authenticated message carries an
// authenticator, a Tag:
//
//	time  the sender's physical clock, Unix milliseconds
//	nonce 8 bytes the sender picked at random when it started, then a
//	      64-bit big-endian counter it increments for every message
//	mac   HMAC-SHA256(K, label || 0x00 || time (8 bytes, big-endian) || nonce || body)
//
// where label names the channel (Heartbeat, Publish, Request, Reply), so
// a message cannot be moved from one channel to another, and body is the
// exact bytes authenticated. A receiver accepts a message when the MAC is
// right (compared with hmac.Equal), its time is within Config.MaxSkew of
// its own physical clock (not the Berkeley-adjusted one: the members'
// Berkeley clocks agree with each other, not with the receiver's
// operating system, which is what every member's `time.Now` shares with
// NTP), and it has not seen that nonce before. The counter makes that last
// check cheap at any message rate: per sender and channel the receiver
// keeps the highest counter seen and a bitmap of the Config.Reorder
// counters below it (the anti-replay window of IPsec, RFC 4303 3.4.3).
//
// This is authentication, not encryption: whoever watches the network
// still reads every message, but cannot forge, alter or replay one.
package clusterauth

import (
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// The channels a Tag is made for (the label in the MAC).
const (
	Heartbeat = "heartbeat" // a server's heartbeat (and goodbye) on the broker's back end
	Publish   = "publish"   // a publication a server sends to the broker's publish-in
	Request   = "request"   // a request to the reference or to a server's cluster services
	Reply     = "reply"     // the answer to an authenticated request
)

// MinSecretLength is the shortest cluster key accepted, in characters. A
// generated key (GenerateSecret) has 43.
const MinSecretLength = 16

// The HKDF parameters that turn the secret into the HMAC key.
const (
	hkdfSalt = "chat cluster key"
	hkdfInfo = "hmac-sha256 v1"
)

// Sizes on the wire.
const (
	NonceSize = 16 // 8 bytes of sender, 8 of counter
	MACSize   = sha256.Size
)

// Config bounds what a receiver accepts.
type Config struct {
	// MaxSkew is how far a message's time may be from the receiver's
	// physical clock, either way (default 60 s).
	MaxSkew time.Duration
	// Reorder is the size in bits of the anti-replay window of one sender
	// on one channel, a multiple of 64 (default 1024): a message may be
	// overtaken by up to Reorder-65 later ones of its sender and channel;
	// later than that, it counts as replayed.
	Reorder int
	// MaxSenders bounds the senders remembered; a sender is forgotten
	// 2*MaxSkew after its last message (default 4096).
	MaxSenders int
	// LogEvery is the least time between two log lines about refused
	// messages (Refusals; default 10 s).
	LogEvery time.Duration
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{MaxSkew: 60 * time.Second, Reorder: 1024, MaxSenders: 4096, LogEvery: 10 * time.Second}
}

// withDefaults fills in the fields whose zero value means the default.
func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.MaxSkew == 0 {
		c.MaxSkew = d.MaxSkew
	}
	if c.Reorder == 0 {
		c.Reorder = d.Reorder
	}
	if c.MaxSenders == 0 {
		c.MaxSenders = d.MaxSenders
	}
	if c.LogEvery == 0 {
		c.LogEvery = d.LogEvery
	}
	return c
}

// Validate reports a config that cannot work.
func (c Config) Validate() error {
	switch {
	case c.MaxSkew <= 0:
		return errors.New("clusterauth: MaxSkew must be positive")
	case c.Reorder < 64 || c.Reorder%64 != 0:
		return errors.New("clusterauth: Reorder must be a positive multiple of 64")
	case c.MaxSenders < 1:
		return errors.New("clusterauth: MaxSenders must be positive")
	case c.LogEvery < 0:
		return errors.New("clusterauth: LogEvery must not be negative")
	}
	return nil
}

// Tag is the authenticator of one message.
type Tag struct {
	Time  int64  // Unix milliseconds, the sender's physical clock
	Nonce []byte // NonceSize bytes: sender, then counter
	MAC   []byte // MACSize bytes
}

// Errors of Check. Each says why a message was refused.
var (
	ErrBadMAC    = errors.New("the authenticator does not match: the sender does not hold this cluster's key, or the message was altered")
	ErrMalformed = errors.New("no authenticator, or a malformed one")
	ErrStale     = errors.New("the authenticator's time is too far from this member's clock")
	ErrReplayed  = errors.New("the message was seen before (replayed)")
	ErrTooMany   = errors.New("too many senders to remember; try again later")
)

// Member holds the cluster key: it authenticates what this process sends
// and checks what it receives. Its methods are safe for concurrent use.
type Member struct {
	cfg     Config
	mac     []byte // the HMAC key, derived from the secret
	sender  [8]byte
	counter atomic.Uint64
	now     func() time.Time // the physical clock (tests replace it)

	mu      sync.Mutex
	windows map[windowKey]*window
}

// Config returns the member's config, defaults filled in.
func (m *Member) Config() Config { return m.cfg }

// windowKey is one sender on one channel.
type windowKey struct {
	label  string
	sender [8]byte
}

// window is the anti-replay state of one sender on one channel.
type window struct {
	top  uint64    // highest counter accepted
	bits []uint64  // bit c%Reorder set: counter c was accepted (for c within Reorder below top)
	last time.Time // when its last message was accepted
}

// ForKey returns the member holding secret, or nil (and no error) when
// secret is empty: the cluster runs open. Zero fields of cfg are the
// defaults.
func ForKey(secret string, cfg Config) (*Member, error) {
	if secret == "" {
		return nil, nil
	}
	return New(secret, cfg)
}

// New returns the member holding secret. An empty secret is an error:
// an open cluster has no Member at all (nil). Zero fields of cfg are the
// defaults.
func New(secret string, cfg Config) (*Member, error) {
	cfg = cfg.withDefaults()
	if len(secret) < MinSecretLength {
		return nil, fmt.Errorf("clusterauth: a cluster key must have at least %d characters (`chat up` prints a generated one)", MinSecretLength)
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	key, err := hkdf.Key(sha256.New, []byte(secret), []byte(hkdfSalt), hkdfInfo, sha256.Size)
	if err != nil {
		return nil, fmt.Errorf("clusterauth: %w", err)
	}
	m := &Member{cfg: cfg, mac: key, now: time.Now, windows: map[windowKey]*window{}}
	rand.Read(m.sender[:])
	return m, nil
}

// GenerateSecret returns a new random cluster key: 32 bytes from
// crypto/rand, base64url without padding (43 characters).
func GenerateSecret() string {
	b := make([]byte, 32)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// Seal returns the authenticator of body on channel label.
func (m *Member) Seal(label string, body ...[]byte) Tag {
	t := Tag{Time: m.now().UnixMilli(), Nonce: make([]byte, NonceSize)}
	copy(t.Nonce, m.sender[:])
	binary.BigEndian.PutUint64(t.Nonce[8:], m.counter.Add(1))
	t.MAC = m.sum(label, t.Time, t.Nonce, body)
	return t
}

// Check accepts body on channel label if t authenticates it, is fresh
// and was not seen before; it returns why not otherwise. The MAC is
// checked first: only members' messages change the replay state.
func (m *Member) Check(label string, t Tag, body ...[]byte) error {
	if err := m.verify(label, t, body); err != nil {
		return err
	}
	return m.fresh(label, t)
}

// CheckReply accepts a reply authenticated by t: the MAC and the time,
// with no replay state, because a reply's body starts with the MAC of the
// request it answers (WrapReply), which is never used twice.
func (m *Member) CheckReply(t Tag, body ...[]byte) error {
	if err := m.verify(Reply, t, body); err != nil {
		return err
	}
	if d := time.Duration(m.now().UnixMilli()-t.Time) * time.Millisecond; d > m.cfg.MaxSkew || -d > m.cfg.MaxSkew {
		return ErrStale
	}
	return nil
}

func (m *Member) verify(label string, t Tag, body [][]byte) error {
	if len(t.Nonce) != NonceSize || len(t.MAC) != MACSize {
		return ErrMalformed
	}
	if !hmac.Equal(t.MAC, m.sum(label, t.Time, t.Nonce, body)) {
		return ErrBadMAC
	}
	return nil
}

// fresh checks the time and the replay window, and records the nonce.
func (m *Member) fresh(label string, t Tag) error {
	now := m.now()
	if d := time.Duration(now.UnixMilli()-t.Time) * time.Millisecond; d > m.cfg.MaxSkew || -d > m.cfg.MaxSkew {
		return ErrStale
	}
	k := windowKey{label: label}
	copy(k.sender[:], t.Nonce[:8])
	counter := binary.BigEndian.Uint64(t.Nonce[8:])
	m.mu.Lock()
	defer m.mu.Unlock()
	w := m.windows[k]
	if w == nil {
		if len(m.windows) >= m.cfg.MaxSenders {
			m.forget(now)
		}
		if len(m.windows) >= m.cfg.MaxSenders {
			return ErrTooMany
		}
		w = &window{bits: make([]uint64, m.cfg.Reorder/64)}
		m.windows[k] = w
	}
	if !w.accept(counter, uint64(m.cfg.Reorder)) {
		return ErrReplayed
	}
	w.last = now
	return nil
}

// forget drops the senders silent for 2*MaxSkew: any message of theirs
// still to come has a time too old to be accepted. mu is held.
func (m *Member) forget(now time.Time) {
	for k, w := range m.windows {
		if now.Sub(w.last) > 2*m.cfg.MaxSkew {
			delete(m.windows, k)
		}
	}
}

// accept records counter c in the window of size n (bits), or reports
// that it was seen already or is too old to tell.
func (w *window) accept(c, n uint64) bool {
	blocks := uint64(len(w.bits))
	switch {
	case c > w.top:
		// Clear the blocks the window slides over, then move the top.
		from, to := w.top/64, c/64
		if to-from >= blocks {
			clear(w.bits)
		} else {
			for b := from + 1; b <= to; b++ {
				w.bits[b%blocks] = 0
			}
		}
		w.top = c
	case w.top-c >= n-64 || c == 0:
		return false // below the window: cannot tell, so refused
	}
	block, bit := (c/64)%blocks, uint64(1)<<(c%64)
	if w.bits[block]&bit != 0 {
		return false
	}
	w.bits[block] |= bit
	return true
}

// sum is the MAC of one message.
func (m *Member) sum(label string, ms int64, nonce []byte, body [][]byte) []byte {
	h := hmac.New(sha256.New, m.mac)
	h.Write([]byte(label))
	h.Write([]byte{0})
	var ts [8]byte
	binary.BigEndian.PutUint64(ts[:], uint64(ms))
	h.Write(ts[:])
	h.Write(nonce)
	for _, b := range body {
		h.Write(b)
	}
	return h.Sum(nil)
}
