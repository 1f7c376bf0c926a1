package client

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"chat/privatedm"
	"chat/proto"
)

// Private direct messages (docs/PROTOCOL.md, section 12). A user who logs
// in with a password has a key pair (login.go) and publishes its public
// key; whois gives it to the others. /msg to such a user seals the text
// with privatedm (NaCl box) before sending it, so that the servers store
// and publish only ciphertext, and anyone subscribed to the user's topic
// sees only that. A direct message to a user without a key is sent in the
// clear, as in the standard. Every direct message shown says which it is,
// right after its time:
//
//	[12:00:01] [private] *alice* hi
//	[12:00:01] [not private] -> *bob* hi
//	[12:00:01] [private, could not be opened: …] *alice*
//	[12:00:01] [private: log in with your password to read it] *alice*

// The marks of direct messages.
const (
	markPrivate    = "private"
	markNotPrivate = "not private"
	markNoKeyPair  = "private: log in with your password to read it"
)

// markUnreadable is the mark of a sealed message that does not open.
func markUnreadable(err error) string {
	return "private, could not be opened: " + err.Error()
}

// keyCache holds the public keys whois gave, by user, for the session.
// Only keys are kept: a user without one is asked again each time, so
// that direct messages to them are private as soon as they have one. It
// is safe for concurrent use.
type keyCache struct {
	mu   sync.Mutex
	keys map[string]*[32]byte
}

func (c *keyCache) get(user string) *[32]byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.keys[user]
}

// put records user's key and returns the one it replaces (nil if none).
func (c *keyCache) put(user string, key *[32]byte) (old *[32]byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.keys == nil {
		c.keys = map[string]*[32]byte{}
	}
	old = c.keys[user]
	c.keys[user] = key
	return old
}

// whoisAnswer is what whois says of a user.
type whoisAnswer struct {
	claimed bool
	key     *[32]byte // nil: no public key, or none usable (badKey)
	badKey  error     // the published key cannot be used (nil otherwise)
}

// lookup asks whois about user and records its key. A key that is not
// the one recorded before is told to the user: someone may be passing
// theirs for the user's, so the fingerprints are worth comparing.
func (s *session) lookup(ctx context.Context, user string) (whoisAnswer, error) {
	reply, err := s.request(ctx, proto.Whois, proto.Data{"user": user})
	if err != nil {
		return whoisAnswer{}, err
	}
	var a whoisAnswer
	a.claimed, _ = reply["claimed"].(bool)
	if text, _ := reply["public_key"].(string); text != "" {
		if a.key, a.badKey = privatedm.DecodePublic(text); a.badKey != nil {
			a.key = nil
		}
	}
	if a.key != nil {
		if old := s.peerKeys.put(user, a.key); old != nil && *old != *a.key {
			s.notice("the key of %s changed: fingerprint %s, was %s; compare it with %s (/whois %s)",
				user, privatedm.Fingerprint(a.key), privatedm.Fingerprint(old), user, user)
		}
	}
	return a, nil
}

// publicKey returns user's public key (nil if none): the one recorded,
// unless fresh asks whois again. cached says it came from the record.
func (s *session) publicKey(ctx context.Context, user string, fresh bool) (key *[32]byte, cached bool, err error) {
	if !fresh {
		if key := s.peerKeys.get(user); key != nil {
			return key, true, nil
		}
	}
	a, err := s.lookup(ctx, user)
	if err != nil {
		return nil, false, err
	}
	if a.badKey != nil {
		return nil, false, fmt.Errorf("the public key of %s cannot be used: %w", user, a.badKey)
	}
	return a.key, false, nil
}

// sealFor returns what /msg sends to user to for text, and its mark:
// text sealed to their public key when they have one (and the user has a
// key pair), otherwise text itself. A text too long to seal within the
// limit on message text is refused.
func (s *session) sealFor(ctx context.Context, to, text string) (sent, mark string, err error) {
	var key *[32]byte
	cached := false
	if to == s.user && s.pair != nil {
		key = &s.pair.Public // to oneself: our own key, whatever the server holds
	} else if key, cached, err = s.publicKey(ctx, to, false); err != nil {
		return "", "", err
	}
	switch {
	case key == nil:
		return text, markNotPrivate, nil
	case s.pair == nil:
		if !s.warnedNoPair {
			s.warnedNoPair = true
			s.notice("%s has a key, but you logged in without a password, so you have none: your direct messages are not private (/login %s with a password)", to, s.user)
		}
		return text, markNotPrivate, nil
	}
	if limit := proto.DefaultLimits().MaxMessage; privatedm.SealedLen(len(text)) > limit {
		return "", "", fmt.Errorf("message not sent: sealed, %d bytes of text take %d bytes, over the limit of %d; a private message holds at most %d bytes",
			len(text), privatedm.SealedLen(len(text)), limit, maxSealable(limit))
	}
	sealed, err := privatedm.Seal(text, key, *s.pair)
	if err != nil && cached { // the key recorded may be stale: ask again
		if key, _, err = s.publicKey(ctx, to, true); err == nil && key != nil {
			sealed, err = privatedm.Seal(text, key, *s.pair)
		}
	}
	if err != nil {
		return "", "", fmt.Errorf("message not sent: %w", err)
	}
	return sealed, markPrivate, nil
}

// maxSealable is the longest text, in bytes, whose sealed form fits in
// limit bytes.
func maxSealable(limit int) int {
	n := limit
	for n > 0 && privatedm.SealedLen(n) > limit {
		n--
	}
	return n
}

// readDirect returns the text to show of a direct message to or from me,
// and its mark. A sealed one is opened with the other side's public key
// (the sender's when it was sent to me, the recipient's when I sent it)
// and pair, the private key of me; when it does not open with the key
// recorded, whois is asked again, in case the key changed.
func (s *session) readDirect(ctx context.Context, d proto.Direct, me string, pair *privatedm.KeyPair) (text, mark string) {
	if !privatedm.IsSealed(d.Text) {
		return d.Text, markNotPrivate
	}
	if pair == nil {
		return "", markNoKeyPair
	}
	peer := d.From
	if peer == me {
		peer = d.To
	}
	if peer == me { // to oneself
		text, err := privatedm.Open(d.Text, &pair.Public, *pair)
		if err != nil {
			return "", markUnreadable(err)
		}
		return text, markPrivate
	}
	key, cached, err := s.publicKey(ctx, peer, false)
	if err == nil && key == nil {
		err = errors.New(peer + " has no public key")
	}
	if err == nil {
		if text, err = privatedm.Open(d.Text, key, *pair); err != nil && cached {
			if key, _, err = s.publicKey(ctx, peer, true); err == nil && key != nil {
				text, err = privatedm.Open(d.Text, key, *pair)
			} else if err == nil {
				err = errors.New(peer + " has no public key")
			}
		}
	}
	if err != nil {
		return "", markUnreadable(err)
	}
	return text, markPrivate
}

// directLine renders a direct message to or from me, opened and marked.
func (s *session) directLine(ctx context.Context, d proto.Direct, me string, pair *privatedm.KeyPair) string {
	var mark string
	d.Text, mark = s.readDirect(ctx, d, me, pair)
	return formatDirect(d, me, mark)
}

// historyDirect renders the direct messages of a history reply (Run's
// goroutine).
func (s *session) historyDirect(ctx context.Context) func(proto.Direct) string {
	return func(d proto.Direct) string { return s.directLine(ctx, d, s.user, s.pair) }
}

// whois shows whether user has an account and the fingerprint of their
// key, which people compare (over another channel) to make sure that the
// server did not hand out someone else's key.
func (s *session) whois(ctx context.Context, user string) error {
	a, err := s.lookup(ctx, user)
	if err != nil {
		return err
	}
	switch {
	case a.badKey != nil:
		s.notice("%s: account (claimed), key not usable (%v): DMs to %s cannot be private", user, a.badKey, user)
	case a.key != nil:
		s.notice("%s: account (claimed), key fingerprint %s", user, privatedm.Fingerprint(a.key))
		if user == s.user && s.pair != nil && *a.key != s.pair.Public {
			s.notice("that is not the key of your key file (fingerprint %s): log in again with your password to publish yours", privatedm.Fingerprint(&s.pair.Public))
		}
	case a.claimed:
		s.notice("%s: account (claimed), no key: DMs to %s are not private", user, user)
	default:
		s.notice("%s: open name (no account), no key: DMs to %s are not private", user, user)
	}
	return nil
}
