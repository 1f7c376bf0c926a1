package store

import (
	"slices"
	"testing"
)

// TruncateAfter drops the entries after an LSN and what they built, and
// keeps everything before; the store goes on from there, and a restart
// keeps the result.
func TestTruncateAfter(t *testing.T) {
	s, path := openTest(t)
	mustApply(t, s, login("ana"))
	mustApply(t, s, create("geral", "ana"))
	mustApply(t, s, post("geral", "ana", "kept"))
	keep, _ := s.Last()

	mustApply(t, s, login("bia")) // a new user: dropped
	mustApply(t, s, login("ana")) // a second login of a kept user: dropped, ana stays
	mustApply(t, s, create("extra", "bia"))
	mustApply(t, s, post("geral", "ana", "dropped"))
	mustApply(t, s, Change{Message: &Message{Kind: Direct, From: "ana", To: "bia", Text: "dm"}})
	mustApply(t, s, Change{Channel: &Channel{Name: "keyed"}, RequestKey: "k1", Reply: []byte("r")})

	if err := s.TruncateAfter(keep); err != nil {
		t.Fatal(err)
	}
	check := func(s *Store) {
		t.Helper()
		if last, _ := s.Last(); last != keep {
			t.Fatalf("last LSN %d after truncating after %d", last, keep)
		}
		if got := s.Users(); !slices.Equal(got, []string{"ana"}) {
			t.Errorf("users %v, want [ana]", got)
		}
		if got := s.Channels(); !slices.Equal(got, []string{"geral"}) {
			t.Errorf("channels %v, want [geral]", got)
		}
		if got := history(t, s, HistoryQuery{Channel: "geral"}); len(got) != 1 || got[0].Text != "kept" {
			t.Errorf("history %v, want only the kept post", got)
		}
		if _, ok := s.Replay("k1"); ok {
			t.Error("the dropped request key still replays")
		}
		if n, _ := s.Count(ctx); n != 1 {
			t.Errorf("count %d, want 1", n)
		}
		if logins, _ := s.Logins(ctx, "ana"); len(logins) != 1 {
			t.Errorf("ana has %d logins, want 1", len(logins))
		}
	}
	check(s)
	// It goes on from there: the next message takes the next id again.
	id := mustApply(t, s, post("geral", "ana", "after"))
	if id != 2 {
		t.Errorf("the next post got id %d, want 2", id)
	}
	if lsn, _ := s.Last(); lsn != keep+1 {
		t.Errorf("next LSN %d, want %d", lsn, keep+1)
	}
	s.TruncateAfter(keep)
	s = reopen(t, path)
	check(s)
}
