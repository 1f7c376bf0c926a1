package account

import (
	"encoding/base64"
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
	key := base64.StdEncoding.EncodeToString(make([]byte, 32))
	// SHA-256 of 32 zero bytes starts 66687aadf862bd776c8fc18b8e9f8e20.
	if got, want := Fingerprint(key), "6668 7aad f862 bd77 6c8f c18b 8e9f 8e20"; got != want {
		t.Fatalf("fingerprint %q, want %q", got, want)
	}
	if Fingerprint("") != "" || Fingerprint("!!") != "" {
		t.Fatal("no key has a fingerprint")
	}
}
