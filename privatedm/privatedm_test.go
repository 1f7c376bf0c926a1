package privatedm

import (
	"encoding/base64"
	"encoding/hex"
	"strings"
	"testing"

	"golang.org/x/crypto/nacl/box"
)

// The key pair of RFC 7748 section 6.1 ("Alice"), a known vector.
const (
	rfcPrivateHex = "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a"
	rfcPublicHex  = "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"
	rfcPublicB64  = "hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo="
	// The first 16 bytes of SHA-256 of the public key, computed with
	// `xxd -r -p | sha256sum`.
	rfcFingerprint = "300c 9c96 03b9 2a4b 39ed 3958 bf92 4011"
)

func hex32(t *testing.T, s string) [32]byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != 32 {
		t.Fatalf("bad test vector %q", s)
	}
	return [32]byte(b)
}

func mustGenerate(t *testing.T) KeyPair {
	t.Helper()
	kp, err := Generate()
	if err != nil {
		t.Fatal(err)
	}
	return kp
}

func TestFingerprintKnownVector(t *testing.T) {
	pub := hex32(t, rfcPublicHex)
	if got := Fingerprint(&pub); got != rfcFingerprint {
		t.Fatalf("Fingerprint = %q, want %q", got, rfcFingerprint)
	}
}

func TestEncodeDecodePublic(t *testing.T) {
	pub := hex32(t, rfcPublicHex)
	if got := EncodePublic(&pub); got != rfcPublicB64 {
		t.Fatalf("EncodePublic = %q, want %q", got, rfcPublicB64)
	}
	back, err := DecodePublic(rfcPublicB64)
	if err != nil || *back != pub {
		t.Fatalf("DecodePublic = %x, %v; want %x", back, err, pub)
	}
}

func TestDecodePublicRefusesBadKeys(t *testing.T) {
	zero := base64.StdEncoding.EncodeToString(make([]byte, 32))
	// 1 is another low-order point: the shared key would be all zeros.
	one := base64.StdEncoding.EncodeToString(append([]byte{1}, make([]byte, 31)...))
	for _, tc := range []struct{ in, want string }{
		{"", "is 0 bytes"},
		{"not base64!", "not valid base64"},
		{rfcPublicB64[:40], "is 30 bytes"},
		{rfcPublicB64[:41], "not valid base64"},
		{base64.StdEncoding.EncodeToString(make([]byte, 31)), "is 31 bytes"},
		{base64.StdEncoding.EncodeToString(make([]byte, 33)), "is 33 bytes"},
		{base64.RawStdEncoding.EncodeToString(make([]byte, 32)), "not valid base64"},
		{zero, "low-order"},
		{one, "low-order"},
	} {
		if _, err := DecodePublic(tc.in); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("DecodePublic(%q) error = %v, want one containing %q", tc.in, err, tc.want)
		}
	}
}

func TestSealOpenBothDirections(t *testing.T) {
	ana, bob := mustGenerate(t), mustGenerate(t)
	for _, text := range []string{
		"hi",
		"olá, ação — 日本語 🙂 ünïcödé",
		strings.Repeat("x", 3000),
	} {
		sealed, err := Seal(text, &bob.Public, ana)
		if err != nil {
			t.Fatal(err)
		}
		if !IsSealed(sealed) || strings.Contains(sealed, text) {
			t.Fatalf("Seal(%q) = %q: not sealed, or the text shows", text, sealed)
		}
		if len(sealed) != SealedLen(len(text)) {
			t.Errorf("len(sealed) = %d, SealedLen says %d", len(sealed), SealedLen(len(text)))
		}
		// The recipient opens it with the sender's public key.
		if got, err := Open(sealed, &ana.Public, bob); err != nil || got != text {
			t.Errorf("bob opens: %q, %v; want %q", got, err, text)
		}
		// The sender reads its own sent message with the recipient's key.
		if got, err := Open(sealed, &bob.Public, ana); err != nil || got != text {
			t.Errorf("ana opens her own: %q, %v; want %q", got, err, text)
		}
	}
}

func TestSealDrawsANewNonceEachTime(t *testing.T) {
	ana, bob := mustGenerate(t), mustGenerate(t)
	a, _ := Seal("same", &bob.Public, ana)
	b, _ := Seal("same", &bob.Public, ana)
	if a == b {
		t.Fatalf("two seals of the same text are equal: %q", a)
	}
}

// TestSealedFormat checks the wire format with box itself, not with Open:
// "e2e1:" + base64(nonce || box.Seal(...)), both ways.
func TestSealedFormat(t *testing.T) {
	ana, bob := mustGenerate(t), mustGenerate(t)

	sealed, err := Seal("hello", &bob.Public, ana)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(sealed, "e2e1:"))
	if err != nil {
		t.Fatal(err)
	}
	nonce := [24]byte(raw[:24])
	plain, ok := box.Open(nil, raw[24:], &nonce, &ana.Public, &bob.Private)
	if !ok || string(plain) != "hello" {
		t.Fatalf("box.Open of Seal's output = %q, %v", plain, ok)
	}

	// And a message built by hand with box.Seal opens with Open.
	nonce = [24]byte{1, 2, 3}
	byHand := "e2e1:" + base64.StdEncoding.EncodeToString(
		box.Seal(nonce[:], []byte("by hand"), &nonce, &ana.Public, &bob.Private))
	if got, err := Open(byHand, &bob.Public, ana); err != nil || got != "by hand" {
		t.Fatalf("Open of a hand-made box = %q, %v", got, err)
	}
}

func TestOpenRefusesTamperingWrongKeysAndBadFormat(t *testing.T) {
	ana, bob, eve := mustGenerate(t), mustGenerate(t), mustGenerate(t)
	sealed, err := Seal("meet at noon", &bob.Public, ana)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := base64.StdEncoding.DecodeString(sealed[len(Prefix):])
	flip := func(i int) string {
		b := append([]byte(nil), raw...)
		b[i] ^= 0x01
		return Prefix + base64.StdEncoding.EncodeToString(b)
	}
	for _, tc := range []struct {
		name, sealed string
		peer         *[32]byte
		kp           KeyPair
		want         string
	}{
		{"nonce bit flipped", flip(0), &ana.Public, bob, "does not open"},
		{"tag bit flipped", flip(24), &ana.Public, bob, "does not open"},
		{"text bit flipped", flip(len(raw) - 1), &ana.Public, bob, "does not open"},
		{"truncated", Prefix + base64.StdEncoding.EncodeToString(raw[:len(raw)-1]), &ana.Public, bob, "does not open"},
		{"eve with ana's key", sealed, &ana.Public, eve, "does not open"},
		{"eve with bob's key", sealed, &bob.Public, eve, "does not open"},
		{"bob with the wrong sender", sealed, &eve.Public, bob, "does not open"},
		{"no prefix", sealed[len(Prefix):], &ana.Public, bob, "does not start with"},
		{"other version", "e2e2:" + sealed[len(Prefix):], &ana.Public, bob, "does not start with"},
		{"plain text", "meet at noon", &ana.Public, bob, "does not start with"},
		{"bad base64", Prefix + "%%%%", &ana.Public, bob, "not valid base64"},
		{"empty after prefix", Prefix, &ana.Public, bob, "too short"},
		{"only a nonce", Prefix + base64.StdEncoding.EncodeToString(raw[:24]), &ana.Public, bob, "too short"},
		{"no peer key", sealed, nil, bob, "no public key"},
		{"low-order peer key", sealed, new([32]byte), bob, "low-order"},
	} {
		got, err := Open(tc.sealed, tc.peer, tc.kp)
		if err == nil || !strings.Contains(err.Error(), tc.want) || got != "" {
			t.Errorf("%s: Open = %q, %v; want an error containing %q", tc.name, got, err, tc.want)
		}
	}
}

func TestSealRefusesBadInput(t *testing.T) {
	ana, bob := mustGenerate(t), mustGenerate(t)
	for _, tc := range []struct {
		name, text string
		to         *[32]byte
		want       string
	}{
		{"empty", "", &bob.Public, "empty"},
		{"not UTF-8", "\xff\xfe", &bob.Public, "UTF-8"},
		{"no key", "hi", nil, "no public key"},
		{"zero key", "hi", new([32]byte), "low-order"},
	} {
		if got, err := Seal(tc.text, tc.to, ana); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: Seal = %q, %v; want an error containing %q", tc.name, got, err, tc.want)
		}
	}
}

func TestOpenRefusesPlaintextThatIsNotUTF8(t *testing.T) {
	ana, bob := mustGenerate(t), mustGenerate(t)
	var nonce [24]byte
	bad := Prefix + base64.StdEncoding.EncodeToString(
		box.Seal(nonce[:], []byte("\xff"), &nonce, &bob.Public, &ana.Private))
	if got, err := Open(bad, &ana.Public, bob); err == nil || !strings.Contains(err.Error(), "UTF-8") {
		t.Fatalf("Open = %q, %v; want a UTF-8 error", got, err)
	}
}

func TestIsSealed(t *testing.T) {
	for text, want := range map[string]bool{
		"e2e1:abc": true,
		"e2e1:":    true,
		"e2e1":     false,
		"hello":    false,
		" e2e1:x":  false,
		"E2E1:x":   false,
	} {
		if got := IsSealed(text); got != want {
			t.Errorf("IsSealed(%q) = %v, want %v", text, got, want)
		}
	}
}

// FuzzOpen feeds Open arbitrary texts: it must return an error or text, and
// never panic. The seeds (run by every `go test`) include a real sealed
// message, so mutations start from the interesting format.
func FuzzOpen(f *testing.F) {
	ana, err := Generate()
	if err != nil {
		f.Fatal(err)
	}
	bob, err := Generate()
	if err != nil {
		f.Fatal(err)
	}
	sealed, err := Seal("seed ✓", &bob.Public, ana)
	if err != nil {
		f.Fatal(err)
	}
	for _, seed := range []string{sealed, "", Prefix, Prefix + "AAAA", Prefix + "====", "hello", sealed[:len(sealed)-4]} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, text string) {
		got, err := Open(text, &ana.Public, bob)
		if err != nil && got != "" {
			t.Fatalf("Open returned both text %q and error %v", got, err)
		}
		if err == nil && text != sealed {
			// Forging a box is not something a fuzzer should manage.
			t.Fatalf("Open accepted a text it was not given: %q -> %q", text, got)
		}
	})
}

func TestOnlyCanonicalBase64(t *testing.T) {
	ana, bob := mustGenerate(t), mustGenerate(t)
	sealed, _ := Seal("hi", &bob.Public, ana)
	withBreak := sealed[:10] + "\n" + sealed[10:]
	if _, err := Open(withBreak, &ana.Public, bob); err == nil || !strings.Contains(err.Error(), "canonical") {
		t.Errorf("Open with a line break: %v, want a canonical-form error", err)
	}
	// The last character before "=" carries 4 bits of the key and 2
	// unused bits: "o" and "p" differ only in those.
	other := strings.Replace(rfcPublicB64, "mo=", "mp=", 1)
	if _, err := DecodePublic(other); err == nil || !strings.Contains(err.Error(), "canonical") {
		t.Errorf("DecodePublic(%q): %v, want a canonical-form error", other, err)
	}
}

// TestSealedLenUnderTheServersLimit pins the figure docs/PROTOCOL.md gives:
// under the 4096-byte limit on message text, 3026 bytes of plaintext fit.
func TestSealedLenUnderTheServersLimit(t *testing.T) {
	if SealedLen(3026) > 4096 || SealedLen(3027) <= 4096 {
		t.Fatalf("SealedLen(3026) = %d, SealedLen(3027) = %d; the limit 4096 falls elsewhere",
			SealedLen(3026), SealedLen(3027))
	}
	ana, bob := mustGenerate(t), mustGenerate(t)
	sealed, err := Seal(strings.Repeat("é", 1513), &bob.Public, ana) // 3026 bytes
	if err != nil || len(sealed) > 4096 {
		t.Fatalf("sealing 3026 bytes gives %d bytes, %v", len(sealed), err)
	}
}
