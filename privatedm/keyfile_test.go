package privatedm

import (
	"encoding/base64"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

func TestLoadOrCreateCreatesOnceThenLoads(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "config", "keys")

	first, created, err := LoadOrCreate(dir, "ana")
	if err != nil || !created {
		t.Fatalf("first LoadOrCreate: created=%v, %v; want a new key", created, err)
	}
	second, created, err := LoadOrCreate(dir, "ana")
	if err != nil || created {
		t.Fatalf("second LoadOrCreate: created=%v, %v; want the stored key", created, err)
	}
	if second != first {
		t.Fatal("the second LoadOrCreate returned another key pair")
	}
	other, created, err := LoadOrCreate(dir, "bob")
	if err != nil || !created || other.Public == first.Public {
		t.Fatalf("bob: created=%v, %v, same key as ana: %v", created, err, other.Public == first.Public)
	}

	// The loaded pair works: a message sealed to ana opens with it.
	sealed, _ := Seal("hi ana", &first.Public, other)
	if got, err := Open(sealed, &other.Public, second); err != nil || got != "hi ana" {
		t.Fatalf("open with the loaded key: %q, %v", got, err)
	}

	// Nothing but the two key files is left in the directory.
	entries, _ := os.ReadDir(dir)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if strings.Join(names, " ") != "ana.key bob.key" {
		t.Fatalf("key directory holds %v, want [ana.key bob.key]", names)
	}
}

func TestKeyFilePermissions(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("Unix permissions")
	}
	dir := filepath.Join(t.TempDir(), "keys")
	if _, _, err := LoadOrCreate(dir, "ana"); err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]os.FileMode{
		dir:                           0o700,
		filepath.Join(dir, "ana.key"): 0o600,
	} {
		info, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if got := info.Mode().Perm(); got != want {
			t.Errorf("%s has mode %o, want %o", path, got, want)
		}
	}
}

func TestLoadOrCreateRefusesNamesThatAreNotPlain(t *testing.T) {
	dir := t.TempDir()
	for _, user := range []string{"", ".", "..", ".hidden", "../ana", "a/b", `a\b`, "/etc/passwd", "a b", "a\x00b", "a\nb"} {
		if _, _, err := LoadOrCreate(dir, user); err == nil {
			t.Errorf("LoadOrCreate(%q) succeeded, want an error", user)
		}
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Fatalf("refused names left files behind: %v", entries)
	}
	// Names the server accepts otherwise are fine, dots and unicode too.
	for _, user := range []string{"ana.b", "zoë", "a-b_c", "日本"} {
		if _, _, err := LoadOrCreate(dir, user); err != nil {
			t.Errorf("LoadOrCreate(%q): %v", user, err)
		}
	}
}

func TestLoadOrCreateLeavesADamagedFileAlone(t *testing.T) {
	good, err := Generate()
	if err != nil {
		t.Fatal(err)
	}
	other, _ := Generate()
	b64 := func(k [32]byte) string { return base64.StdEncoding.EncodeToString(k[:]) }
	for _, tc := range []struct{ name, content, want string }{
		{"empty", "", "not a key file"},
		{"garbage", "\x00\x01garbage", "not a key file"},
		{"truncated", `{"user": "ana", "public": "` + b64(good.Public)[:10], "not a key file"},
		{"unknown field", `{"user": "ana", "secret": "x"}`, "not a key file"},
		{"no private key", `{"user": "ana", "public": "` + b64(good.Public) + `"}`, "private key"},
		{"short private key", `{"user": "ana", "public": "` + b64(good.Public) + `", "private": "AAAA"}`, "private key"},
		{"bad public key", `{"user": "ana", "public": "%%", "private": "` + b64(good.Private) + `"}`, "public key"},
		{"mismatched keys", `{"user": "ana", "public": "` + b64(other.Public) + `", "private": "` + b64(good.Private) + `"}`,
			"does not belong"},
		{"two key pairs", `{"user": "ana", "public": "` + b64(good.Public) + `", "private": "` + b64(good.Private) + `"} {}`,
			"unexpected data"},
	} {
		dir := t.TempDir()
		path := filepath.Join(dir, "ana.key")
		if err := os.WriteFile(path, []byte(tc.content), 0o600); err != nil {
			t.Fatal(err)
		}
		_, created, err := LoadOrCreate(dir, "ana")
		if err == nil || created || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "damaged") {
			t.Errorf("%s: created=%v, %v; want a 'damaged' error containing %q", tc.name, created, err, tc.want)
		}
		if after, _ := os.ReadFile(path); string(after) != tc.content {
			t.Errorf("%s: the damaged file was changed to %q", tc.name, after)
		}
	}
}

// TestLoadKnownKeyFile reads a key file written by hand with the RFC 7748
// key pair: the format is what the package documents, not only what it
// happens to write.
func TestLoadKnownKeyFile(t *testing.T) {
	dir := t.TempDir()
	content := `{"user": "ana", "public": "` + rfcPublicB64 + `", "private": "dwdtCnMYpX08FsFyUbJmRd9ML4frwJkqsXf7pR25LCo="}`
	if err := os.WriteFile(filepath.Join(dir, "ana.key"), []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	kp, created, err := LoadOrCreate(dir, "ana")
	if err != nil || created {
		t.Fatalf("LoadOrCreate: created=%v, %v", created, err)
	}
	if kp.Public != hex32(t, rfcPublicHex) || kp.Private != hex32(t, rfcPrivateHex) {
		t.Fatalf("loaded %x / %x, want the RFC 7748 pair", kp.Public, kp.Private)
	}
}

func TestDefaultDir(t *testing.T) {
	t.Setenv(ConfigDirEnv, "/tmp/somewhere")
	if got, err := DefaultDir(); err != nil || got != filepath.Join("/tmp/somewhere", "keys") {
		t.Fatalf("DefaultDir with %s set = %q, %v", ConfigDirEnv, got, err)
	}
	t.Setenv(ConfigDirEnv, "")
	base, err := os.UserConfigDir()
	if err != nil {
		t.Skipf("no user configuration directory here: %v", err)
	}
	if got, err := DefaultDir(); err != nil || got != filepath.Join(base, "chat", "keys") {
		t.Fatalf("DefaultDir = %q, %v; want %q", got, err, filepath.Join(base, "chat", "keys"))
	}
}

// TestLoadOrCreateConcurrently starts several clients of one user at once:
// they all end up with the one key pair that was stored, and exactly one of
// them created it.
func TestLoadOrCreateConcurrently(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "keys")
	const clients = 8
	type result struct {
		kp      KeyPair
		created bool
		err     error
	}
	results := make(chan result, clients)
	for range clients {
		go func() {
			kp, created, err := LoadOrCreate(dir, "ana")
			results <- result{kp, created, err}
		}()
	}
	stored := make(map[[32]byte]bool)
	creators := 0
	for range clients {
		r := <-results
		if r.err != nil {
			t.Fatal(r.err)
		}
		stored[r.kp.Public] = true
		if r.created {
			creators++
		}
	}
	if len(stored) != 1 || creators != 1 {
		t.Fatalf("%d different keys, %d creators; want 1 and 1", len(stored), creators)
	}
}
