package account

import (
	"encoding/base64"
	"encoding/hex"
	"strings"
	"testing"
)

// cheap is a hash config for tests: argon2id's smallest.
var cheap = HashConfig{Time: 1, Memory: 8, Threads: 1}

func TestHashVerifies(t *testing.T) {
	h := Hash("s3cret", cheap)
	if !strings.HasPrefix(h, "$argon2id$v=19$m=8,t=1,p=1$") {
		t.Fatalf("hash %q is not a PHC argon2id string", h)
	}
	if !Verify("s3cret", h) {
		t.Fatal("the right password does not verify")
	}
	if Verify("s3cret!", h) || Verify("", h) {
		t.Fatal("a wrong password verifies")
	}
	if Hash("s3cret", cheap) == h {
		t.Fatal("two hashes of one password are equal: the salt is not random")
	}
	for _, bad := range []string{"", "s3cret", "$argon2i$v=19$m=8,t=1,p=1$AAAA$AAAA", strings.Replace(h, "m=8", "m=x", 1)} {
		if Verify("s3cret", bad) {
			t.Errorf("verified against %q", bad)
		}
	}
}

func TestTokensAreRandom32Bytes(t *testing.T) {
	a, b := NewToken(), NewToken()
	raw, err := base64.RawURLEncoding.DecodeString(a)
	if err != nil || len(raw) != 32 || a == b {
		t.Fatalf("tokens %q %q: %v", a, b, err)
	}
}

func TestFingerprint(t *testing.T) {
	// RFC 7748's Alice public key; SHA-256 of it starts 300c9c9603b92a4b39ed3958bf924011.
	raw, _ := hex.DecodeString("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")
	if got, want := Fingerprint(base64.StdEncoding.EncodeToString(raw)), "300c 9c96 03b9 2a4b 39ed 3958 bf92 4011"; got != want {
		t.Fatalf("fingerprint %q, want %q", got, want)
	}
	// No fingerprint for no key, an unreadable one, or a low-order point.
	if Fingerprint("") != "" || Fingerprint("!!") != "" || Fingerprint(base64.StdEncoding.EncodeToString(make([]byte, 32))) != "" {
		t.Fatal("no key has a fingerprint")
	}
}
