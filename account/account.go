// Package account holds the secrets of user accounts: a password's slow
// salted hash (argon2id, RFC 9106), the random login tokens, and the
// fingerprint by which people compare a public key.
//
// A password is stored only as its hash, in the PHC string format
// ("$argon2id$v=19$m=19456,t=1,p=1$salt$hash"), which carries its own
// parameters: hashes made before a change of HashConfig still verify.
package account

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"

	"golang.org/x/crypto/argon2"

	"chat/privatedm"
)

// HashConfig are argon2id's parameters. The defaults are OWASP's minimum
// for argon2id (19 MiB, one pass, one thread): tens of milliseconds per
// hash, which is what makes guessing slow.
type HashConfig struct {
	Time    uint32 // passes over the memory
	Memory  uint32 // KiB of memory
	Threads uint8  // lanes computed in parallel
}

// DefaultHashConfig returns the default argon2id parameters.
func DefaultHashConfig() HashConfig {
	return HashConfig{Time: 1, Memory: 19 * 1024, Threads: 1}
}

// Validate reports parameters argon2id refuses.
func (c HashConfig) Validate() error {
	if c.Time < 1 || c.Threads < 1 || c.Memory < 8*uint32(c.Threads) {
		return errors.New("account: argon2id needs time >= 1, threads >= 1 and at least 8 KiB of memory per thread")
	}
	return nil
}

// Sizes of a hash's salt and key, and of a token, in bytes.
const (
	SaltSize  = 16
	KeySize   = 32
	TokenSize = 32
)

// Hash returns the PHC string of password's argon2id hash with a fresh
// random salt.
func Hash(password string, c HashConfig) string {
	salt := make([]byte, SaltSize)
	rand.Read(salt) // never fails (crypto/rand)
	key := argon2.IDKey([]byte(password), salt, c.Time, c.Memory, c.Threads, KeySize)
	b64 := base64.RawStdEncoding
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s", argon2.Version, c.Memory, c.Time, c.Threads,
		b64.EncodeToString(salt), b64.EncodeToString(key))
}

// Verify reports whether password is the one encoded was made from.
func Verify(password, encoded string) bool {
	parts := strings.Split(encoded, "$") // "", "argon2id", "v=19", "m=..,t=..,p=..", salt, key
	if len(parts) != 6 || parts[1] != "argon2id" || parts[2] != fmt.Sprintf("v=%d", argon2.Version) {
		return false
	}
	var c HashConfig
	if _, err := fmt.Sscanf(parts[3], "m=%d,t=%d,p=%d", &c.Memory, &c.Time, &c.Threads); err != nil || c.Validate() != nil {
		return false
	}
	b64 := base64.RawStdEncoding
	salt, err1 := b64.DecodeString(parts[4])
	want, err2 := b64.DecodeString(parts[5])
	if err1 != nil || err2 != nil || len(want) == 0 {
		return false
	}
	got := argon2.IDKey([]byte(password), salt, c.Time, c.Memory, c.Threads, uint32(len(want)))
	return subtle.ConstantTimeCompare(got, want) == 1
}

// NewToken returns a new login token: 32 random bytes, base64url
// without padding.
func NewToken() string {
	b := make([]byte, TokenSize)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// Fingerprint is how people compare a public key (the standard base64 of
// the raw key) by eye or over the phone: the first 16 bytes of the
// SHA-256 of the raw key, in hex, in groups of 4 ("3f2a 91bc ..."). It
// is "" for an empty or unreadable key.
func Fingerprint(publicKey string) string {
	pub, err := privatedm.DecodePublic(publicKey)
	if err != nil {
		return ""
	}
	return privatedm.Fingerprint(pub)
}
