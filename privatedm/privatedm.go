// Package privatedm seals direct messages end to end, so that only the two
// people in a conversation can read them. The servers and the broker store
// and publish the sealed text like any other message text; whoever
// subscribes to a user's topic sees only ciphertext.
//
// Each user has an X25519 key pair (NaCl box, golang.org/x/crypto). The
// public key travels with the account as EncodePublic's base64; the private
// key stays in a file on the user's machine (LoadOrCreate). A sealed message
// is
//
//	"e2e1:" + base64(nonce (24 bytes) || box.Seal(plaintext, nonce, recipient's public, sender's private))
//
// NaCl box derives the same shared key from either side's private key and
// the other side's public key, so Open reads a message in both directions:
// the recipient opens it with the sender's public key, and the sender opens
// its own sent message (in history) with the recipient's public key.
//
// People compare Fingerprint outputs, over another channel, to make sure a
// server did not hand them someone else's key. The package depends on
// nothing of the project, so servers and clients share it.
package privatedm

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"golang.org/x/crypto/curve25519"
	"golang.org/x/crypto/nacl/box"
)

// Prefix starts every sealed message text; the "1" is the format's version.
const Prefix = "e2e1:"

// nonceSize is the length of NaCl box's nonce, sent in front of the box.
const nonceSize = 24

// KeyPair is one user's X25519 key pair, as NaCl box uses it.
type KeyPair struct {
	Public, Private [32]byte
}

// Generate makes a new random key pair.
func Generate() (KeyPair, error) {
	pub, priv, err := box.GenerateKey(rand.Reader)
	if err != nil {
		return KeyPair{}, fmt.Errorf("generate key pair: %w", err)
	}
	return KeyPair{Public: *pub, Private: *priv}, nil
}

// EncodePublic is a public key as it travels in the protocol (the
// public_key field): standard base64 of its 32 bytes.
func EncodePublic(pub *[32]byte) string {
	return base64.StdEncoding.EncodeToString(pub[:])
}

// DecodePublic reads a public key written by EncodePublic. It refuses text
// that is not base64 of exactly 32 bytes, and the few keys that no one can
// hold a private key for (see checkPublic).
func DecodePublic(s string) (*[32]byte, error) {
	b, err := decodeBase64(s)
	if err != nil {
		return nil, fmt.Errorf("public key is not valid base64: %w", err)
	}
	if len(b) != 32 {
		return nil, fmt.Errorf("public key is %d bytes, it must be 32", len(b))
	}
	pub := new([32]byte)
	copy(pub[:], b)
	if err := checkPublic(pub); err != nil {
		return nil, err
	}
	return pub, nil
}

// decodeBase64 decodes standard base64 and accepts only the one way of
// writing the bytes that EncodeToString gives: the decoder alone would also
// skip line breaks and ignore the unused bits of the last character, so
// that several texts would stand for the same key or message.
func decodeBase64(s string) ([]byte, error) {
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return nil, err
	}
	if base64.StdEncoding.EncodeToString(b) != s {
		return nil, errors.New("not in canonical form (line breaks, or unused bits set)")
	}
	return b, nil
}

// checkPublic refuses a missing key and the "low-order" points of
// Curve25519: with such a key every key pair computes the same, publicly
// known shared key, so a message sealed to it could be read by anyone.
// X25519 returns an error exactly for those points, whatever the scalar,
// so multiplying by the base point's encoding (any scalar would do) finds
// them.
func checkPublic(pub *[32]byte) error {
	if pub == nil {
		return errors.New("no public key")
	}
	if _, err := curve25519.X25519(curve25519.Basepoint, pub[:]); err != nil {
		return errors.New("public key is not usable (a low-order point)")
	}
	return nil
}

// Fingerprint is what people compare to check a public key: the first 16
// bytes of its SHA-256, in lowercase hex, in groups of 4 digits separated
// by spaces ("3f2a 91bc …", 8 groups).
func Fingerprint(pub *[32]byte) string {
	sum := sha256.Sum256(pub[:])
	digits := hex.EncodeToString(sum[:16])
	groups := make([]string, 0, len(digits)/4)
	for i := 0; i < len(digits); i += 4 {
		groups = append(groups, digits[i:i+4])
	}
	return strings.Join(groups, " ")
}

// IsSealed reports whether a message text is in the sealed format (it
// starts with Prefix). It says nothing about whether it opens.
func IsSealed(text string) bool {
	return strings.HasPrefix(text, Prefix)
}

// SealedLen is the length in bytes of the sealed text of a plaintext of n
// bytes, to check against the server's limit on message text before
// sending.
func SealedLen(n int) int {
	return len(Prefix) + base64.StdEncoding.EncodedLen(nonceSize+n+box.Overhead)
}

// Seal seals text from kp's owner to the holder of the public key to. The
// text must be non-empty UTF-8, as any message text. Each call draws a new
// random nonce, so sealing the same text twice gives different results.
func Seal(text string, to *[32]byte, kp KeyPair) (string, error) {
	switch {
	case text == "":
		return "", errors.New("cannot seal an empty message")
	case !utf8.ValidString(text):
		return "", errors.New("cannot seal a message that is not valid UTF-8")
	}
	if err := checkPublic(to); err != nil {
		return "", fmt.Errorf("cannot seal to this key: %w", err)
	}
	var nonce [nonceSize]byte
	if _, err := rand.Read(nonce[:]); err != nil {
		return "", fmt.Errorf("draw a nonce: %w", err)
	}
	sealed := box.Seal(nonce[:], []byte(text), &nonce, to, &kp.Private)
	return Prefix + base64.StdEncoding.EncodeToString(sealed), nil
}

// Open reads a sealed text exchanged between kp's owner and the holder of
// the public key peer, in either direction: peer is the sender's key for a
// message received, the recipient's key for a message kp's owner sent. It
// fails when the text is not in the sealed format, was altered, or was
// sealed between other keys.
func Open(sealed string, peer *[32]byte, kp KeyPair) (string, error) {
	if !IsSealed(sealed) {
		return "", fmt.Errorf("not a sealed message: it does not start with %q", Prefix)
	}
	if err := checkPublic(peer); err != nil {
		return "", fmt.Errorf("cannot open with this key: %w", err)
	}
	raw, err := decodeBase64(sealed[len(Prefix):])
	if err != nil {
		return "", fmt.Errorf("sealed message is not valid base64: %w", err)
	}
	if len(raw) < nonceSize+box.Overhead {
		return "", fmt.Errorf("sealed message is %d bytes, too short to hold a nonce and a box (%d)",
			len(raw), nonceSize+box.Overhead)
	}
	var nonce [nonceSize]byte
	copy(nonce[:], raw[:nonceSize])
	plain, ok := box.Open(nil, raw[nonceSize:], &nonce, peer, &kp.Private)
	if !ok {
		return "", errors.New("sealed message does not open: it was altered, or sealed between other keys")
	}
	if !utf8.ValidString(string(plain)) {
		return "", errors.New("sealed message opens to text that is not valid UTF-8")
	}
	return string(plain), nil
}
