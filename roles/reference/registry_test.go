package reference

import (
	"errors"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

var t0 = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

func names(servers []Server) []string {
	out := []string{}
	for _, s := range servers {
		out = append(out, s.Name)
	}
	return out
}

func mustRank(t *testing.T, r *registry, name, addr string, now time.Time) Server {
	t.Helper()
	s, _, err := r.rank(name, addr, now)
	if err != nil {
		t.Fatalf("rank(%q): %v", name, err)
	}
	return s
}

func TestRanksAreUniqueAndStable(t *testing.T) {
	r := newRegistry(3*time.Second, nil, nil)
	seen := map[int]string{}
	for i, name := range []string{"a", "b", "c", "d"} {
		s, isNew, err := r.rank(name, "", t0)
		if err != nil || !isNew {
			t.Fatalf("rank(%q) = %+v, new %v, %v", name, s, isNew, err)
		}
		if s.Rank != i+1 {
			t.Errorf("rank(%q) = %d, want %d", name, s.Rank, i+1)
		}
		if other, dup := seen[s.Rank]; dup {
			t.Errorf("rank %d given to %q and %q", s.Rank, other, name)
		}
		seen[s.Rank] = name
	}
	for name, rank := range map[string]int{"c": 3, "a": 1, "d": 4} {
		s, isNew, err := r.rank(name, "", t0.Add(time.Second))
		if err != nil || isNew || s.Rank != rank {
			t.Errorf("re-registering %q: rank %d, new %v, %v; want rank %d, not new", name, s.Rank, isNew, err, rank)
		}
	}
	if s := mustRank(t, r, "e", "", t0); s.Rank != 5 {
		t.Errorf("a new name after re-registrations got rank %d, want 5", s.Rank)
	}
}

func TestReRegistrationKeepsRankAndUpdatesAddr(t *testing.T) {
	r := newRegistry(3*time.Second, nil, nil)
	mustRank(t, r, "a", "tcp://h:1", t0)
	mustRank(t, r, "b", "tcp://h:2", t0)
	if s := mustRank(t, r, "a", "tcp://h:9", t0); s.Rank != 1 || s.Addr != "tcp://h:9" {
		t.Errorf("re-registered a = %+v, want rank 1 at tcp://h:9", s)
	}
	if s := mustRank(t, r, "a", "", t0); s.Addr != "tcp://h:9" {
		t.Errorf("re-registering without addr changed it to %q", s.Addr)
	}
	if s, _, err := r.heartbeat("b", "tcp://h:8", t0); err != nil || s.Addr != "tcp://h:8" {
		t.Errorf("heartbeat with a new addr: %+v, %v", s, err)
	}
	list := r.list(t0)
	if got := names(list); !slices.Equal(got, []string{"a", "b"}) || list[0].Addr != "tcp://h:9" || list[1].Addr != "tcp://h:8" {
		t.Errorf("list = %+v", list)
	}
}

func TestExpiryAfterTheTimeout(t *testing.T) {
	const timeout = 3 * time.Second
	r := newRegistry(timeout, nil, nil)
	mustRank(t, r, "b", "", t0)
	mustRank(t, r, "a", "", t0.Add(time.Second)) // rank 2, heard later
	if got := names(r.list(t0.Add(time.Second))); !slices.Equal(got, []string{"b", "a"}) {
		t.Fatalf("list = %v, want [b a] (by rank)", got)
	}
	if gone := r.expire(t0.Add(timeout)); len(gone) != 0 {
		t.Errorf("expired at exactly the timeout: %v", names(gone))
	}
	at := t0.Add(timeout + time.Millisecond)
	if got := names(r.list(at)); !slices.Equal(got, []string{"a"}) {
		t.Errorf("list just after b's timeout = %v, want [a]", got)
	}
	if gone := names(r.expire(at)); !slices.Equal(gone, []string{"b"}) {
		t.Errorf("expire = %v, want [b]", gone)
	}
	if gone := r.expire(at); len(gone) != 0 {
		t.Errorf("b expired twice: %v", names(gone))
	}
	// A heartbeat keeps a alive; b comes back with one.
	hb := t0.Add(3 * time.Second)
	if _, rejoined, err := r.heartbeat("a", "", hb); err != nil || rejoined {
		t.Errorf("heartbeat(a) while listed: rejoined %v, %v", rejoined, err)
	}
	if _, rejoined, err := r.heartbeat("b", "", hb.Add(time.Second)); err != nil || !rejoined {
		t.Errorf("heartbeat(b) after expiry: rejoined %v, %v", rejoined, err)
	}
	if got := names(r.list(hb.Add(time.Second))); !slices.Equal(got, []string{"b", "a"}) {
		t.Errorf("list after heartbeats = %v, want [b a]", got)
	}
	if got := r.list(hb.Add(time.Minute)); len(got) != 0 {
		t.Errorf("list a minute later = %v, want empty", names(got))
	}
	if got := names(r.known()); !slices.Equal(got, []string{"b", "a"}) {
		t.Errorf("known = %v: expiry must not forget ranks", got)
	}
}

func TestHeartbeatFromAnUnknownNameIsRefused(t *testing.T) {
	r := newRegistry(3*time.Second, nil, nil)
	if _, _, err := r.heartbeat("ghost", "", t0); !errors.Is(err, errUnknownServer) {
		t.Fatalf("heartbeat(ghost) = %v, want errUnknownServer", err)
	}
	if got := r.list(t0); len(got) != 0 {
		t.Errorf("a refused heartbeat listed %v", names(got))
	}
	if s := mustRank(t, r, "ghost", "", t0); s.Rank != 1 {
		t.Errorf("rank after a refused heartbeat = %d, want 1", s.Rank)
	}
}

func TestAFailedSaveChangesNothing(t *testing.T) {
	fail := errors.New("disk full")
	var failing bool
	r := newRegistry(3*time.Second, nil, func(Server) error {
		if failing {
			return fail
		}
		return nil
	})
	mustRank(t, r, "a", "tcp://h:1", t0)
	failing = true
	if _, _, err := r.rank("b", "", t0); !errors.Is(err, fail) {
		t.Fatalf("rank(b) with a failing save = %v", err)
	}
	if _, _, err := r.rank("a", "tcp://h:2", t0); !errors.Is(err, fail) {
		t.Fatalf("new addr with a failing save = %v", err)
	}
	failing = false
	if got := r.known(); len(got) != 1 || got[0].Addr != "tcp://h:1" {
		t.Errorf("after failed saves: %+v", got)
	}
	if s := mustRank(t, r, "b", "", t0); s.Rank != 2 {
		t.Errorf("b got rank %d after a failed save, want 2", s.Rank)
	}
}

func TestRestartKeepsRanks(t *testing.T) {
	path := filepath.Join(t.TempDir(), FileName)
	open := func() (*registry, func()) {
		db, err := openDB(path)
		if err != nil {
			t.Fatal(err)
		}
		known, err := loadServers(db)
		if err != nil {
			t.Fatal(err)
		}
		return newRegistry(3*time.Second, known, func(s Server) error { return saveServer(db, s) }), func() { db.Close() }
	}

	r, closeDB := open()
	db, err := openDB(path) // a second connection sees the same pragmas
	if err != nil {
		t.Fatal(err)
	}
	var sync int
	var journal string
	if err := db.QueryRow("PRAGMA synchronous").Scan(&sync); err != nil || sync != 2 {
		t.Errorf("synchronous = %d (%v), want 2 (FULL)", sync, err)
	}
	if err := db.QueryRow("PRAGMA journal_mode").Scan(&journal); err != nil || journal != "wal" {
		t.Errorf("journal_mode = %q (%v), want wal", journal, err)
	}
	db.Close()
	mustRank(t, r, "a", "tcp://h:1", t0)
	mustRank(t, r, "b", "tcp://h:2", t0)
	mustRank(t, r, "c", "", t0)
	mustRank(t, r, "b", "tcp://h:3", t0) // address changed
	closeDB()

	r, closeDB = open()
	defer closeDB()
	if got := r.list(t0); len(got) != 0 {
		t.Errorf("after a restart nobody is alive until heard from, got %v", names(got))
	}
	known := r.known()
	if len(known) != 3 || known[0].Name != "a" || known[1].Name != "b" || known[1].Addr != "tcp://h:3" || known[2].Rank != 3 {
		t.Fatalf("known after restart = %+v", known)
	}
	if !known[0].Registered.Equal(t0) {
		t.Errorf("registration time %v, want %v", known[0].Registered, t0)
	}
	now := t0.Add(time.Hour)
	if s, rejoined, err := r.heartbeat("b", "", now); err != nil || !rejoined || s.Rank != 2 {
		t.Errorf("heartbeat(b) after restart = %+v, rejoined %v, %v", s, rejoined, err)
	}
	if s, isNew, _ := r.rank("c", "", now); isNew || s.Rank != 3 {
		t.Errorf("rank(c) after restart = %d (new %v), want 3", s.Rank, isNew)
	}
	if s := mustRank(t, r, "d", "", now); s.Rank != 4 {
		t.Errorf("rank(d) after restart = %d, want 4", s.Rank)
	}
	if got := names(r.list(now)); !slices.Equal(got, []string{"b", "c", "d"}) {
		t.Errorf("list = %v, want [b c d]", got)
	}
}
