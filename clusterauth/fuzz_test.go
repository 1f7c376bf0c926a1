package clusterauth

import (
	"bytes"
	"testing"
)

// FuzzUnwrap: whatever arrives on a member's socket, Unwrap, Admit and
// CheckFrames never panic, and nothing but a frame sealed with the key
// comes out as authentic.
func FuzzUnwrap(f *testing.F) {
	m, err := New("fuzz cluster key, long enough", DefaultConfig())
	if err != nil {
		f.Fatal(err)
	}
	other, _ := New("another cluster key, as long", DefaultConfig())
	sealedHere := []byte("\x82\xa7service\xa4ping\xa4data\x80")
	good, _ := m.Wrap(Request, sealedHere)
	forged, _ := other.Wrap(Request, []byte("forged"))
	f.Add(good)
	f.Add(forged)
	f.Add([]byte{})
	f.Add([]byte("\x82\xa7service\xa4auth\xa4data\x80"))
	f.Fuzz(func(t *testing.T, b []byte) {
		// The only frame sealed with the key is sealedHere (the fuzzing
		// workers each have their own Member, with the same key).
		if inner, _, err := m.Unwrap(Request, b); err == nil && !bytes.Equal(inner, sealedHere) {
			t.Fatalf("a frame not sealed with the key came out authentic: %q", inner)
		}
		_, _, _ = m.Admit(b, func(string) bool { return true })
		_, _ = m.CheckFrames(Publish, [][]byte{[]byte("topic"), b, b})
	})
}
