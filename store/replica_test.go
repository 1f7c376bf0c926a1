package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"
)

// Tests of the replication API (replica.go, handle.go): LSNs and epochs,
// copying one store's log into another, the tail and SQLite behind
// EntriesAfter, restarts, gaps, Reset, Durable and WaitDurable.

// openConfig opens a store with cfg and closes it at the end of the test.
func openConfig(t testing.TB, cfg Config) *Store {
	t.Helper()
	s, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// tempPath is a fresh store path.
func tempPath(t testing.TB) string { return filepath.Join(t.TempDir(), "chat.db") }

// mustSubmit submits ch and fails the test on error.
func mustSubmit(t testing.TB, s *Store, ch Change) (int64, uint64) {
	t.Helper()
	id, lsn, err := s.Submit(ctx, ch)
	if err != nil {
		t.Fatalf("Submit(%+v): %v", ch, err)
	}
	return id, lsn
}

var noop = Change{Noop: true}

// allEntries reads every durable entry of s in pages of page entries and
// checks that they come in order, without a gap, up to Last.
func allEntries(t testing.TB, s *Store, page int) []Entry {
	t.Helper()
	var all []Entry
	for {
		got, err := s.EntriesAfter(ctx, uint64(len(all)), page, 1<<20)
		if err != nil {
			t.Fatalf("EntriesAfter(%d): %v", len(all), err)
		}
		if len(got) == 0 {
			break
		}
		if len(got) > page {
			t.Fatalf("EntriesAfter(%d, max %d) returned %d entries", len(all), page, len(got))
		}
		for _, e := range got {
			if want := uint64(len(all) + 1); e.LSN != want {
				t.Fatalf("entry %d where %d comes next", e.LSN, want)
			}
			all = append(all, e)
		}
	}
	if last, _ := s.Last(); uint64(len(all)) != last {
		t.Fatalf("read %d entries, Last is %d", len(all), last)
	}
	return all
}

// replicate appends to dst what src has beyond dst's last entry, in chunks
// of chunk(i) entries for the i-th chunk.
func replicate(t testing.TB, src, dst *Store, chunk func(i int) int) {
	t.Helper()
	for i := 0; ; i++ {
		after, _ := dst.Last()
		entries, err := src.EntriesAfter(ctx, after, chunk(i), 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		if len(entries) == 0 {
			return
		}
		lsn, err := dst.Append(ctx, entries)
		if err != nil {
			t.Fatalf("Append of %d..%d: %v", entries[0].LSN, entries[len(entries)-1].LSN, err)
		}
		if want := entries[len(entries)-1].LSN; lsn != want {
			t.Fatalf("Append returned %d, want %d", lsn, want)
		}
	}
}

func whole(int) int { return 1000 }

// decode decodes an entry's Data and checks it against its header.
func decode(t testing.TB, re Entry) *entry {
	t.Helper()
	var e entry
	if err := msgpack.Unmarshal(re.Data, &e); err != nil {
		t.Fatalf("entry %d: %v", re.LSN, err)
	}
	if e.LSN != re.LSN || e.Epoch != re.Epoch {
		t.Fatalf("entry %d/%d holds %d/%d", re.LSN, re.Epoch, e.LSN, e.Epoch)
	}
	return &e
}

func entriesEqual(a, b []Entry) bool {
	return slices.EqualFunc(a, b, func(x, y Entry) bool {
		return x.LSN == y.LSN && x.Epoch == y.Epoch && bytes.Equal(x.Data, y.Data)
	})
}

func messagesEqual(a, b []Message) bool {
	return slices.EqualFunc(a, b, func(x, y Message) bool {
		return x.ID == y.ID && x.Kind == y.Kind && x.Channel == y.Channel && x.From == y.From &&
			x.To == y.To && x.Text == y.Text && x.Timestamp.Equal(y.Timestamp) && x.Clock == y.Clock
	})
}

// leader is what fillLeader wrote, to compare replicas with.
type leader struct {
	keys    map[string]string // request key → reply
	users   []string
	msgs    int64
	failLSN uint64 // the entry of the failed check with a request key
}

// fillLeader writes a mix of every kind of entry to s, over two epochs.
func fillLeader(t testing.TB, s *Store) leader {
	t.Helper()
	l := leader{keys: map[string]string{}, users: []string{"ana", "bia", "caio"}}
	t0 := time.UnixMilli(1_700_000_000_123).UTC()
	at := func(d time.Duration) time.Time { return t0.Add(d) }

	s.SetEpoch(1)
	mustSubmit(t, s, noop)
	mustSubmit(t, s, Change{Login: &Login{User: "ana", Timestamp: at(0)}})
	mustSubmit(t, s, Change{Login: &Login{User: "bia", Timestamp: at(time.Second)}})
	mustSubmit(t, s, Change{Login: &Login{User: "ana", Timestamp: at(2 * time.Second)}}) // a second login
	mustSubmit(t, s, Change{Channel: &Channel{Name: "geral", Creator: "ana", Timestamp: at(0)}})
	mustSubmit(t, s, Change{Channel: &Channel{Name: "random", Creator: "bia", Timestamp: at(3 * time.Second)},
		RequestKey: "bia/1", Reply: []byte("created")})
	l.keys["bia/1"] = "created"
	mustSubmit(t, s, Change{Message: &Message{Kind: Post, Channel: "geral", From: "ana", Text: "oi", Timestamp: at(4 * time.Second), Clock: 3}})
	replyID := func(id int64, err error) []byte { return fmt.Appendf(nil, "id=%d err=%v", id, err) }
	id, _ := mustSubmit(t, s, Change{Message: &Message{Kind: Direct, From: "bia", To: "ana", Text: "olá", Timestamp: at(5 * time.Second), Clock: 1 << 63},
		RequestKey: "bia/2", ReplyFunc: replyID})
	l.keys["bia/2"] = fmt.Sprintf("id=%d err=<nil>", id)

	// A failed check with a request key: an entry holding only the key.
	_, lsn, err := s.Submit(ctx, Change{Channel: &Channel{Name: "geral", Creator: "bia"}, RequestKey: "bia/3", ReplyFunc: replyID})
	if !errors.Is(err, ErrChannelExists) || lsn == 0 {
		t.Fatalf("failed check with a key: lsn %d, %v", lsn, err)
	}
	l.failLSN = lsn
	l.keys["bia/3"] = fmt.Sprintf("id=0 err=%v", ErrChannelExists)
	// A failed check without one: no entry.
	if _, lsn, err := s.Submit(ctx, post("nowhere", "ana", "x")); !errors.Is(err, ErrNoChannel) || lsn != 0 {
		t.Fatalf("failed check without a key: lsn %d, %v", lsn, err)
	}

	s.SetEpoch(2)
	mustSubmit(t, s, noop)
	mustSubmit(t, s, Change{Login: &Login{User: "caio", Timestamp: at(6 * time.Second)}})
	for i := range 20 {
		ts := at(time.Duration(7+i) * time.Second)
		switch i % 3 {
		case 0:
			mustSubmit(t, s, Change{Message: &Message{Kind: Post, Channel: "geral", From: "caio", Text: fmt.Sprint("g", i), Timestamp: ts, Clock: uint64(10 + i)}})
		case 1:
			mustSubmit(t, s, Change{Message: &Message{Kind: Post, Channel: "random", From: "ana", Text: fmt.Sprint("r", i), Timestamp: ts, Clock: uint64(10 + i)}})
		case 2:
			mustSubmit(t, s, Change{Message: &Message{Kind: Direct, From: "caio", To: "bia", Text: fmt.Sprint("d", i), Timestamp: ts, Clock: uint64(10 + i)}})
		}
	}
	l.msgs = 2 + 20
	return l
}

// sameStore checks that got holds what want holds, entry for entry.
func sameStore(t testing.TB, want, got *Store, l leader) {
	t.Helper()
	if w, g := want.Users(), got.Users(); !slices.Equal(w, g) || !slices.Equal(w, l.users) {
		t.Errorf("Users = %v, want %v", g, w)
	}
	if w, g := want.Channels(), got.Channels(); !slices.Equal(w, g) || len(w) != 2 {
		t.Errorf("Channels = %v, want %v", g, w)
	}
	for _, ch := range []string{"geral", "random"} {
		w, g := history(t, want, HistoryQuery{Channel: ch}), history(t, got, HistoryQuery{Channel: ch})
		if len(w) == 0 || !messagesEqual(w, g) {
			t.Errorf("History(%s) = %+v, want %+v", ch, g, w)
		}
	}
	for i, a := range l.users {
		for _, b := range l.users[i+1:] {
			q := HistoryQuery{User: a, Peer: b}
			if w, g := history(t, want, q), history(t, got, q); !messagesEqual(w, g) {
				t.Errorf("History(%s, %s) = %+v, want %+v", a, b, g, w)
			}
		}
		w, err := want.Logins(ctx, a)
		if err != nil {
			t.Fatal(err)
		}
		g, err := got.Logins(ctx, a)
		if err != nil {
			t.Fatal(err)
		}
		if len(w) == 0 || !slices.EqualFunc(w, g, func(x, y Login) bool { return x.User == y.User && x.Timestamp.Equal(y.Timestamp) }) {
			t.Errorf("Logins(%s) = %v, want %v", a, g, w)
		}
	}
	for key, reply := range l.keys {
		if r, ok := got.Replay(key); !ok || string(r) != reply {
			t.Errorf("Replay(%s) = %q, %v; want %q", key, r, ok, reply)
		}
	}
	if _, ok := got.Replay("nobody/1"); ok {
		t.Error("Replay of an unknown key succeeded")
	}
	wc, _ := want.Count(ctx)
	gc, _ := got.Count(ctx)
	if wc != gc || gc != l.msgs {
		t.Errorf("Count = %d, want %d (leader %d)", gc, l.msgs, wc)
	}
	wl, we := want.Last()
	gl, ge := got.Last()
	if wl != gl || we != ge {
		t.Errorf("Last = (%d, %d), want (%d, %d)", gl, ge, wl, we)
	}
	we2, g2 := allEntries(t, want, 7), allEntries(t, got, 5)
	if !entriesEqual(we2, g2) {
		t.Errorf("the logs differ:\n got %v\nwant %v", g2, we2)
	}
	for _, e := range we2 {
		epoch, ok, err := got.EpochAt(ctx, e.LSN)
		if err != nil || !ok || epoch != e.Epoch {
			t.Errorf("EpochAt(%d) = %d, %v, %v; want %d", e.LSN, epoch, ok, err, e.Epoch)
		}
	}
}

func TestSubmitLSN(t *testing.T) {
	s, _ := openTest(t)
	var last uint64
	next := func(what string, ch Change) (int64, uint64) {
		t.Helper()
		id, lsn := mustSubmit(t, s, ch)
		if lsn != last+1 {
			t.Fatalf("%s: LSN %d after %d", what, lsn, last)
		}
		last = lsn
		return id, lsn
	}
	next("login", login("ana"))
	next("channel", create("geral", "ana"))
	id1, _ := next("post", post("geral", "ana", "1"))
	id2, _ := next("direct", direct("ana", "ana", "2"))
	if id1 <= 0 || id2 != id1+1 {
		t.Fatalf("message ids %d, %d", id1, id2)
	}

	// A failed check with a request key gets an LSN: the key's entry.
	_, lsn, err := s.Submit(ctx, Change{Channel: &Channel{Name: "geral", Creator: "bia"}, RequestKey: "bia/1", Reply: []byte("no")})
	if !errors.Is(err, ErrChannelExists) || lsn != last+1 {
		t.Fatalf("failed check with a key: lsn %d (last %d), %v", lsn, last, err)
	}
	last = lsn
	if l, _ := s.Last(); l != lsn {
		t.Fatalf("Last = %d, want %d", l, lsn)
	}
	if r, ok := s.Replay("bia/1"); !ok || string(r) != "no" {
		t.Fatalf("Replay = %q, %v", r, ok)
	}
	// Without a key, or a duplicate key, or an invalid change: LSN 0, no entry.
	for what, ch := range map[string]Change{
		"failed check":  post("nowhere", "ana", "x"),
		"duplicate key": {Login: &Login{User: "bia"}, RequestKey: "bia/1"},
		"invalid":       {Login: &Login{User: "bia"}, Noop: true},
		"nothing set":   {},
	} {
		if _, lsn, err := s.Submit(ctx, ch); err == nil || lsn != 0 {
			t.Errorf("%s: lsn %d, err %v; want 0 and an error", what, lsn, err)
		}
	}
	if l, _ := s.Last(); l != last {
		t.Fatalf("Last = %d after changes that wrote nothing, want %d", l, last)
	}
	next("after the failures", login("bia"))

	// Concurrent submits: every LSN once, and message ids in LSN order.
	const writers, each = 8, 40
	type got struct {
		id  int64
		lsn uint64
	}
	results := make(chan got, writers*each)
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				id, lsn, err := s.Submit(ctx, post("geral", "ana", fmt.Sprint(w, "/", i)))
				if err != nil {
					t.Error(err)
					return
				}
				results <- got{id, lsn}
			}
		})
	}
	wg.Wait()
	close(results)
	var all []got
	for r := range results {
		all = append(all, r)
	}
	slices.SortFunc(all, func(a, b got) int { return int(a.lsn) - int(b.lsn) })
	for i, r := range all {
		if r.lsn != last+1+uint64(i) {
			t.Fatalf("concurrent submits: LSN %d at position %d (after %d)", r.lsn, i, last)
		}
		if i > 0 && r.id != all[i-1].id+1 {
			t.Fatalf("message id %d at LSN %d follows id %d", r.id, r.lsn, all[i-1].id)
		}
	}
	if l, _ := s.Last(); l != last+writers*each {
		t.Fatalf("Last = %d, want %d", l, last+writers*each)
	}
}

func TestEpochs(t *testing.T) {
	s, _ := openTest(t)
	if l, e := s.Last(); l != 0 || e != 0 {
		t.Fatalf("empty store: Last = (%d, %d)", l, e)
	}
	if e, ok, err := s.EpochAt(ctx, 0); e != 0 || !ok || err != nil {
		t.Fatalf("EpochAt(0) = %d, %v, %v", e, ok, err)
	}
	if _, ok, err := s.EpochAt(ctx, 1); ok || err != nil {
		t.Fatalf("EpochAt(1) of an empty store: %v, %v", ok, err)
	}

	_, l1 := mustSubmit(t, s, login("ana"))
	if e, ok, _ := s.EpochAt(ctx, l1); !ok || e != 0 {
		t.Fatalf("before SetEpoch: EpochAt = %d, %v", e, ok)
	}
	s.SetEpoch(7)
	mustSubmit(t, s, create("geral", "ana"))
	_, l3 := mustSubmit(t, s, post("geral", "ana", "oi"))
	if e, ok, _ := s.EpochAt(ctx, l3); !ok || e != 7 {
		t.Fatalf("EpochAt(%d) = %d, %v; want 7", l3, e, ok)
	}
	if l, e := s.Last(); l != l3 || e != 7 {
		t.Fatalf("Last = (%d, %d), want (%d, 7)", l, e, l3)
	}
	if e, ok, _ := s.EpochAt(ctx, l1); !ok || e != 0 {
		t.Fatalf("an older entry changed epoch: %d, %v", e, ok)
	}
	if _, ok, _ := s.EpochAt(ctx, l3+1); ok {
		t.Fatal("EpochAt past the end: ok")
	}

	// A Noop writes an entry, in the new epoch, and changes nothing else.
	s.SetEpoch(8)
	count, _ := s.Count(ctx)
	id, ln := mustSubmit(t, s, noop)
	if id != 0 || ln != l3+1 {
		t.Fatalf("Noop: id %d, lsn %d; want 0, %d", id, ln, l3+1)
	}
	if l, e := s.Last(); l != ln || e != 8 {
		t.Fatalf("after the Noop: Last = (%d, %d), want (%d, 8)", l, e, ln)
	}
	entries, err := s.EntriesAfter(ctx, ln-1, 10, 1<<20)
	if err != nil || len(entries) != 1 || entries[0].LSN != ln || entries[0].Epoch != 8 {
		t.Fatalf("EntriesAfter(%d) = %v, %v", ln-1, entries, err)
	}
	if e := decode(t, entries[0]); e.Kind != entryNoop {
		t.Fatalf("the Noop's entry is a %q", e.Kind)
	}
	if c, _ := s.Count(ctx); c != count || !slices.Equal(s.Users(), []string{"ana"}) || !slices.Equal(s.Channels(), []string{"geral"}) {
		t.Fatalf("a Noop changed the state: count %d→%d, users %v, channels %v", count, c, s.Users(), s.Channels())
	}

	// A failed check's key entry is stamped too.
	s.SetEpoch(9)
	_, lk, err := s.Submit(ctx, Change{Channel: &Channel{Name: "geral"}, RequestKey: "k"})
	if !errors.Is(err, ErrChannelExists) {
		t.Fatal(err)
	}
	if e, ok, _ := s.EpochAt(ctx, lk); !ok || e != 9 {
		t.Fatalf("key entry: EpochAt = %d, %v; want 9", e, ok)
	}
	if l, e := s.Last(); l != lk || e != 9 {
		t.Fatalf("Last = (%d, %d), want (%d, 9)", l, e, lk)
	}
}

// TestLastIsConsistent: Last's epoch is the epoch of the entry at Last's
// LSN, also while entries of new epochs are being acknowledged.
func TestLastIsConsistent(t *testing.T) {
	for _, tail := range []int{0, 1} { // the default tail, and one that is trimmed all the time
		t.Run(fmt.Sprint("tail=", tail), func(t *testing.T) {
			s := openConfig(t, Config{Path: tempPath(t), SyncInterval: -1, TailEntries: tail})
			var stop atomic.Bool
			var bad, checks atomic.Int64
			var wg sync.WaitGroup
			for range 2 {
				wg.Go(func() {
					for !stop.Load() {
						lsn, epoch := s.Last()
						if lsn == 0 {
							continue
						}
						want, ok, err := s.EpochAt(ctx, lsn)
						if err != nil || !ok {
							t.Errorf("EpochAt(%d) = %v, %v after Last", lsn, ok, err)
							return
						}
						checks.Add(1)
						if epoch != want && bad.Add(1) == 1 {
							t.Errorf("Last = (%d, %d), but the entry at %d has epoch %d", lsn, epoch, lsn, want)
						}
					}
				})
			}
			for i := uint64(1); i <= 1000; i++ {
				s.SetEpoch(i) // every entry in a new epoch, as after each election
				mustSubmit(t, s, noop)
			}
			stop.Store(true)
			wg.Wait()
			if bad.Load() > 0 {
				t.Errorf("%d of %d Last calls paired an LSN with another entry's epoch", bad.Load(), checks.Load())
			}
		})
	}
}

func TestReplicateAll(t *testing.T) {
	a, _ := openTest(t)
	l := fillLeader(t, a)
	if e, ok, _ := a.EpochAt(ctx, l.failLSN); !ok || e != 1 {
		t.Fatalf("the key entry's epoch: %d, %v", e, ok)
	}

	// All at once.
	b, bPath := openTest(t)
	entries, err := a.EntriesAfter(ctx, 0, 1000, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	last, _ := a.Last()
	if uint64(len(entries)) != last {
		t.Fatalf("EntriesAfter(0) returned %d entries, the log has %d", len(entries), last)
	}
	got, err := b.Append(ctx, entries)
	if err != nil || got != last {
		t.Fatalf("Append = %d, %v; want %d", got, err, last)
	}
	sameStore(t, a, b, l)

	// In chunks of 1, 2, 3, ... entries.
	c, _ := openTest(t)
	replicate(t, a, c, func(i int) int { return i + 1 })
	sameStore(t, a, c, l)

	// B after a restart, and a store copied from B (a replica's log is
	// replicable as it is).
	b.Close()
	b = reopen(t, bPath)
	sameStore(t, a, b, l)
	d, _ := openTest(t)
	replicate(t, b, d, func(int) int { return 4 })
	sameStore(t, a, d, l)

	// The leader goes on; the replicas follow.
	a.SetEpoch(3)
	mustSubmit(t, a, noop)
	mustSubmit(t, a, post("geral", "bia", "mais"))
	mustSubmit(t, a, Change{Login: &Login{User: "ana"}, RequestKey: "ana/9", Reply: []byte("hi")})
	l.msgs++
	l.keys["ana/9"] = "hi"
	for _, r := range []*Store{b, c, d} {
		replicate(t, a, r, whole)
		sameStore(t, a, r, l)
	}
}

// TestAppendThenSubmit: after Append, local changes continue the log and
// the message ids, and the writer knows the replicated users, channels and
// request keys.
func TestAppendThenSubmit(t *testing.T) {
	a, _ := openTest(t)
	l := fillLeader(t, a)
	b, bPath := openTest(t)
	replicate(t, a, b, whole)

	last, _ := a.Last()
	maxID := l.msgs // the leader's message ids are 1..msgs
	b.SetEpoch(5)
	id, lsn := mustSubmit(t, b, post("random", "bia", "local"))
	if lsn != last+1 || id != maxID+1 {
		t.Fatalf("local post after Append: id %d, lsn %d; want id %d, lsn %d", id, lsn, maxID+1, last+1)
	}
	// caio exists on B only through replication.
	id2, lsn2 := mustSubmit(t, b, direct("ana", "caio", "olá caio"))
	if lsn2 != lsn+1 || id2 != id+1 {
		t.Fatalf("DM to a replicated user: id %d, lsn %d", id2, lsn2)
	}
	if _, _, err := b.Submit(ctx, create("geral", "bia")); !errors.Is(err, ErrChannelExists) {
		t.Fatalf("creating a replicated channel again: %v", err)
	}
	if _, _, err := b.Submit(ctx, Change{Login: &Login{User: "bia"}, RequestKey: "bia/1"}); !errors.Is(err, ErrDuplicate) {
		t.Fatalf("a replicated request key again: %v", err)
	}
	if c, _ := b.Count(ctx); c != l.msgs+2 {
		t.Fatalf("Count = %d, want %d", c, l.msgs+2)
	}
	if l, e := b.Last(); l != lsn2 || e != 5 {
		t.Fatalf("Last = (%d, %d), want (%d, 5)", l, e, lsn2)
	}

	// After a restart too (the ids come from SQLite then).
	b.Close()
	b = reopen(t, bPath)
	id3, lsn3 := mustSubmit(t, b, post("geral", "ana", "after restart"))
	if lsn3 != lsn2+1 || id3 != id2+1 {
		t.Fatalf("after a restart: id %d, lsn %d; want %d, %d", id3, lsn3, id2+1, lsn2+1)
	}
	if r, ok := b.Replay("bia/2"); !ok || string(r) != l.keys["bia/2"] {
		t.Fatalf("a replicated request key after a restart: Replay %q, %v", r, ok)
	}
	seen := ids(history(t, b, HistoryQuery{Channel: "geral"}))
	if !slices.IsSorted(seen) || len(slices.Compact(slices.Clone(seen))) != len(seen) || seen[len(seen)-1] != id3 {
		t.Fatalf("message ids in geral: %v", seen)
	}
}

func TestEntriesAfterTailAndSQLite(t *testing.T) {
	const n = 100
	s := openConfig(t, Config{Path: tempPath(t), TailEntries: 8})
	mustSubmit(t, s, create("geral", "ana"))
	for i := 2; i <= n; i++ {
		if i%25 == 0 {
			s.SetEpoch(uint64(i))
		}
		mustSubmit(t, s, post("geral", "ana", fmt.Sprint("message ", i)))
	}
	s.e.tailMu.Lock()
	tailFirst, tailLen := s.e.tail[0].LSN, len(s.e.tail)
	s.e.tailMu.Unlock()
	if tailFirst <= 20 || tailLen > 16 {
		t.Fatalf("the tail holds %d entries from %d: want at most 16, the newest", tailLen, tailFirst)
	}

	// What SQLite holds, read directly: the reference.
	s.e.waitIndexed()
	rows, err := s.e.rdb.Query("SELECT lsn, epoch, entry FROM log ORDER BY lsn")
	if err != nil {
		t.Fatal(err)
	}
	var ref []Entry
	for rows.Next() {
		var e Entry
		if err := rows.Scan(&e.LSN, &e.Epoch, &e.Data); err != nil {
			t.Fatal(err)
		}
		ref = append(ref, e)
	}
	rows.Close()
	if len(ref) != n {
		t.Fatalf("the log table holds %d entries, want %d", len(ref), n)
	}
	for _, e := range ref {
		decode(t, e)
	}

	if got := allEntries(t, s, 10); !entriesEqual(got, ref) {
		t.Fatal("pages of 10 differ from the log table")
	}
	// From every position: across the tail's first entry, from SQLite, from the tail.
	for after := 0; after <= n; after++ {
		got, err := s.EntriesAfter(ctx, uint64(after), 10, 1<<20)
		if err != nil {
			t.Fatalf("EntriesAfter(%d): %v", after, err)
		}
		if want := ref[after:min(n, after+10)]; !entriesEqual(got, want) {
			t.Fatalf("EntriesAfter(%d) = %d entries from %v, want %d", after, len(got), got[:min(1, len(got))], len(want))
		}
	}
	// maxBytes, from SQLite (after 0) and from the tail (after n-5).
	for _, after := range []int{0, n - 5} {
		size := func(k int) int {
			total := 0
			for _, e := range ref[after : after+k] {
				total += len(e.Data)
			}
			return total
		}
		for _, tc := range []struct{ maxBytes, want int }{
			{0, 1}, {1, 1}, {size(1), 1}, {size(2) - 1, 1}, {size(2), 2}, {size(3) - 1, 2}, {size(3), 3}, {1 << 20, min(10, n-after)},
		} {
			got, err := s.EntriesAfter(ctx, uint64(after), 10, tc.maxBytes)
			if err != nil {
				t.Fatal(err)
			}
			if want := ref[after : after+tc.want]; !entriesEqual(got, want) {
				t.Errorf("EntriesAfter(%d, maxBytes %d) returned %d entries, want %d", after, tc.maxBytes, len(got), tc.want)
			}
		}
	}
	for _, max := range []int{0, -1} {
		for _, after := range []uint64{0, n - 2} {
			if got, err := s.EntriesAfter(ctx, after, max, 1<<20); len(got) != 0 || err != nil {
				t.Errorf("EntriesAfter(%d, max %d) = %d entries, %v; want none", after, max, len(got), err)
			}
		}
	}
	for lsn := uint64(1); lsn <= n; lsn++ {
		if e, ok, err := s.EpochAt(ctx, lsn); err != nil || !ok || e != ref[lsn-1].Epoch {
			t.Fatalf("EpochAt(%d) = %d, %v, %v; want %d", lsn, e, ok, err, ref[lsn-1].Epoch)
		}
	}

	// A replica with a small tail takes them in one batch larger than its
	// tail, and serves them the same.
	r := openConfig(t, Config{Path: tempPath(t), TailEntries: 8})
	if _, err := r.Append(ctx, ref); err != nil {
		t.Fatal(err)
	}
	if got := allEntries(t, r, 10); !entriesEqual(got, ref) {
		t.Fatal("the replica's entries differ")
	}
	if l, e := r.Last(); l != n || e != ref[n-1].Epoch {
		t.Fatalf("replica: Last = (%d, %d)", l, e)
	}
}

func TestEntriesAfterRestart(t *testing.T) {
	path := tempPath(t)
	s := openConfig(t, Config{Path: path, TailEntries: 8})
	mustSubmit(t, s, login("ana"))
	mustSubmit(t, s, create("geral", "ana"))
	for i := range 30 {
		if i%10 == 0 {
			s.SetEpoch(uint64(10 + i))
		}
		mustSubmit(t, s, post("geral", "ana", fmt.Sprint(i)))
	}
	before := allEntries(t, s, 9)
	lastLSN, lastEpoch := s.Last()
	if lastEpoch != 30 {
		t.Fatalf("Last epoch %d, want 30", lastEpoch)
	}
	s.Close()

	s = openConfig(t, Config{Path: path, TailEntries: 8})
	s.e.tailMu.Lock()
	tailLen := len(s.e.tail)
	s.e.tailMu.Unlock()
	if tailLen != 0 {
		t.Fatalf("the tail holds %d entries after a restart", tailLen)
	}
	if l, e := s.Last(); l != lastLSN || e != lastEpoch {
		t.Fatalf("after a restart: Last = (%d, %d), want (%d, %d)", l, e, lastLSN, lastEpoch)
	}
	if got := allEntries(t, s, 9); !entriesEqual(got, before) {
		t.Fatal("the entries changed with the restart")
	}
	for _, e := range before {
		if epoch, ok, err := s.EpochAt(ctx, e.LSN); err != nil || !ok || epoch != e.Epoch {
			t.Fatalf("after a restart: EpochAt(%d) = %d, %v, %v; want %d", e.LSN, epoch, ok, err, e.Epoch)
		}
	}
	if _, ok, err := s.EpochAt(ctx, lastLSN+1); ok || err != nil {
		t.Fatalf("EpochAt past the end: %v, %v", ok, err)
	}

	// A new entry: the tail holds it, SQLite the rest.
	s.SetEpoch(99)
	_, lsn := mustSubmit(t, s, post("geral", "ana", "new"))
	if lsn != lastLSN+1 {
		t.Fatalf("LSN %d after a restart at %d", lsn, lastLSN)
	}
	if l, e := s.Last(); l != lsn || e != 99 {
		t.Fatalf("Last = (%d, %d)", l, e)
	}
	all := allEntries(t, s, 9)
	if !entriesEqual(all[:len(before)], before) || all[len(before)].Epoch != 99 {
		t.Fatal("entries after the restart and a new one differ")
	}
	got, err := s.EntriesAfter(ctx, lastLSN-1, 10, 1<<20) // SQLite, then the tail
	if err != nil || len(got) != 2 || got[0].LSN != lastLSN || got[1].LSN != lsn {
		t.Fatalf("EntriesAfter(%d) across the restart = %v, %v", lastLSN-1, got, err)
	}
}

// TestRecoveredEntries: entries durable in the change log but not yet in
// SQLite when the process died get into the log table, with their epochs,
// when the store is opened again.
func TestRecoveredEntries(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "chat.db")
	// The indexer lingers for an hour: nothing reaches SQLite meanwhile.
	s := openConfig(t, Config{Path: path, IndexLinger: time.Hour})
	s.SetEpoch(4)
	mustSubmit(t, s, noop)
	mustSubmit(t, s, login("ana"))
	s.SetEpoch(5)
	mustSubmit(t, s, create("geral", "ana"))
	mustSubmit(t, s, post("geral", "ana", "oi"))
	want, err := s.EntriesAfter(ctx, 0, 100, 1<<20) // from the tail: no wait for the indexer
	if err != nil || len(want) != 4 {
		t.Fatalf("EntriesAfter = %d entries, %v", len(want), err)
	}

	// Copy the files as a crash would leave them.
	crashed := filepath.Join(dir, "crashed")
	if err := os.MkdirAll(crashed+"/chat.db-log", 0o755); err != nil {
		t.Fatal(err)
	}
	for _, suffix := range []string{"", "-wal", "-shm"} {
		if _, err := os.Stat(path + suffix); err == nil {
			copyFile(t, path+suffix, crashed+"/chat.db"+suffix)
		}
	}
	segs, err := os.ReadDir(path + "-log")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range segs {
		copyFile(t, filepath.Join(path+"-log", f.Name()), filepath.Join(crashed, "chat.db-log", f.Name()))
	}

	r := reopen(t, filepath.Join(crashed, "chat.db"))
	if l, e := r.Last(); l != 4 || e != 5 {
		t.Fatalf("recovered: Last = (%d, %d), want (4, 5)", l, e)
	}
	if got := allEntries(t, r, 3); !entriesEqual(got, want) {
		t.Fatalf("recovered entries = %v, want %v", got, want)
	}
	if e, ok, err := r.EpochAt(ctx, 1); err != nil || !ok || e != 4 {
		t.Fatalf("recovered EpochAt(1) = %d, %v, %v", e, ok, err)
	}
}

// TestEntriesAfterMissingLog: a store whose log table lacks entries (the
// indexer failed, or the file predates the table) says so instead of
// returning nothing, which would stall a replica for good.
func TestEntriesAfterMissingLog(t *testing.T) {
	s, path := openTest(t)
	for i := range 5 {
		mustSubmit(t, s, login(fmt.Sprint("u", i)))
	}
	s.Close()
	s = reopen(t, path)
	if _, err := s.e.wdb.Exec("DELETE FROM log"); err != nil { // only the indexer writes on wdb: it is idle
		t.Fatal(err)
	}
	if got, err := s.EntriesAfter(ctx, 0, 10, 1<<20); err == nil {
		t.Fatalf("EntriesAfter with the log table empty = %d entries, nil error", len(got))
	}
}

func TestAppendGap(t *testing.T) {
	a, _ := openTest(t)
	fillLeader(t, a)
	src := allEntries(t, a, 100)
	b, _ := openTest(t)
	if _, err := b.Append(ctx, src[:3]); err != nil {
		t.Fatal(err)
	}
	if lsn, err := b.Append(ctx, nil); err != nil || lsn != 3 {
		t.Fatalf("Append(nil) = %d, %v; want 3", lsn, err)
	}

	unchanged := func(what string) {
		t.Helper()
		if l, _ := b.Last(); l != 3 {
			t.Fatalf("%s: Last = %d, want 3", what, l)
		}
		if got := allEntries(t, b, 10); !entriesEqual(got, src[:3]) {
			t.Fatalf("%s: the log changed", what)
		}
		if users := b.Users(); !slices.Equal(users, []string{"ana", "bia"}) {
			t.Fatalf("%s: Users = %v", what, users)
		}
		if c, _ := b.Count(ctx); c != 0 || len(b.Channels()) != 0 {
			t.Fatalf("%s: Count %d, Channels %v", what, c, b.Channels())
		}
	}
	// src[3] is entry 4, the next one.
	for what, entries := range map[string][]Entry{
		"a gap":                   src[4:7],
		"the start again":         src[0:5],
		"the last entry again":    src[2:5],
		"a gap inside":            {src[3], src[4], src[6]},
		"out of order":            {src[4], src[3]},
		"a gap after a good one":  {src[3], src[5]},
		"one far ahead":           src[20:21],
		"a gap, then a bad entry": {src[5], {LSN: 7, Data: []byte("junk")}},
	} {
		_, err := b.Append(ctx, entries)
		if err == nil {
			t.Fatalf("Append of %s: no error", what)
		}
		if what != "a gap, then a bad entry" && !errors.Is(err, ErrGap) {
			t.Errorf("Append of %s: %v, want ErrGap", what, err)
		}
		unchanged(what)
	}

	for what, entries := range map[string][]Entry{
		"junk":                  {{LSN: 4, Epoch: src[3].Epoch, Data: []byte("junk")}},
		"no data":               {{LSN: 4, Epoch: src[3].Epoch}},
		"a truncated entry":     {{LSN: 4, Epoch: src[3].Epoch, Data: src[3].Data[:len(src[3].Data)/2]}},
		"a wrong LSN header":    {{LSN: 4, Epoch: src[4].Epoch, Data: src[4].Data}},
		"a wrong epoch header":  {{LSN: 4, Epoch: src[3].Epoch + 1, Data: src[3].Data}},
		"a good one, then junk": {src[3], {LSN: 5, Epoch: src[4].Epoch, Data: []byte{0xc1}}},
	} {
		if _, err := b.Append(ctx, entries); err == nil {
			t.Errorf("Append of %s: no error", what)
		}
		unchanged(what)
	}

	// What follows still goes in.
	if lsn, err := b.Append(ctx, src[3:]); err != nil || lsn != uint64(len(src)) {
		t.Fatalf("Append of the rest = %d, %v", lsn, err)
	}
	if got := allEntries(t, b, 10); !entriesEqual(got, src) {
		t.Fatal("the log differs after the rest")
	}
}

func TestReset(t *testing.T) {
	a, _ := openTest(t)
	l := fillLeader(t, a)
	s, path := openTest(t)
	replicate(t, a, s, whole)
	mustSubmit(t, s, Change{Login: &Login{User: "zé"}, RequestKey: "zé/1", Reply: []byte("ok")})
	oldLast, oldEpoch := s.Last()
	_, changed := s.Durable()
	s.SetEpoch(42)

	if err := s.Reset(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-changed:
	default:
		t.Error("Reset did not close the Durable channel")
	}
	if l, e := s.Last(); l != 0 || e != 0 {
		t.Fatalf("after Reset: Last = (%d, %d)", l, e)
	}
	if len(s.Users()) != 0 || len(s.Channels()) != 0 || s.HasUser("ana") || s.HasChannel("geral") {
		t.Fatalf("after Reset: users %v, channels %v", s.Users(), s.Channels())
	}
	if c, err := s.Count(ctx); c != 0 || err != nil {
		t.Fatalf("after Reset: Count = %d, %v", c, err)
	}
	if h := history(t, s, HistoryQuery{Channel: "geral"}); len(h) != 0 {
		t.Fatalf("after Reset: History = %v", h)
	}
	if _, ok := s.Replay("bia/1"); ok {
		t.Fatal("after Reset: a request key is still there")
	}
	if got, err := s.EntriesAfter(ctx, 0, 10, 1<<20); len(got) != 0 || err != nil {
		t.Fatalf("after Reset: EntriesAfter = %v, %v", got, err)
	}
	if _, ok, _ := s.EpochAt(ctx, 1); ok {
		t.Fatal("after Reset: EpochAt(1) ok")
	}

	// The old files, as a store of their own.
	old := path + ".diverged/chat.db"
	if _, err := os.Stat(old); err != nil {
		t.Fatalf("the old store is not kept: %v", err)
	}
	o := reopen(t, old)
	if l, e := o.Last(); l != oldLast || e != oldEpoch || !o.HasUser("zé") || !o.HasUser("caio") {
		t.Fatalf("the kept store: Last (%d, %d), users %v; want (%d, %d)", l, e, o.Users(), oldLast, oldEpoch)
	}
	if r, ok := o.Replay("zé/1"); !ok || string(r) != "ok" {
		t.Fatalf("the kept store: Replay = %q, %v", r, ok)
	}
	o.Close()

	// The store works afterwards: local changes, in the epoch set before.
	id, lsn := mustSubmit(t, s, login("nova"))
	if lsn != 1 || id != 0 {
		t.Fatalf("after Reset: first Submit = id %d, lsn %d", id, lsn)
	}
	if l, e := s.Last(); l != 1 || e != 42 {
		t.Fatalf("after Reset: Last = (%d, %d), want (1, 42): the epoch set before Reset is lost", l, e)
	}
	if _, _, err := s.Submit(ctx, Change{Login: &Login{User: "zé"}, RequestKey: "zé/1"}); err != nil {
		t.Fatalf("a request key of the old store: %v", err)
	}

	// Reset again and copy the leader: a replica like any other. The
	// second Reset replaces the kept copy.
	if err := s.Reset(); err != nil {
		t.Fatal(err)
	}
	o = reopen(t, old)
	if !slices.Equal(o.Users(), []string{"nova", "zé"}) {
		t.Fatalf("the second kept store: users %v", o.Users())
	}
	o.Close()
	replicate(t, a, s, func(int) int { return 6 })
	sameStore(t, a, s, l)
	id, lsn = mustSubmit(t, s, post("geral", "ana", "depois"))
	if al, _ := a.Last(); lsn != al+1 || id != l.msgs+1 {
		t.Fatalf("Submit after Reset and Append: id %d, lsn %d", id, lsn)
	}

	// Persisted: a restart sees the new store.
	s.Close()
	s = reopen(t, path)
	if !s.HasUser("caio") || s.HasUser("nova") {
		t.Fatalf("after a restart: users %v", s.Users())
	}
	s.Close()
	if err := s.Reset(); !errors.Is(err, ErrClosed) {
		t.Fatalf("Reset after Close: %v", err)
	}
}

// TestResetWhileReading: readers and a writer keep going while the store
// is reset under them: no panic, no deadlock, no error but the expected.
func TestResetWhileReading(t *testing.T) {
	s, _ := openTest(t)
	mustSubmit(t, s, login("ana"))
	mustSubmit(t, s, create("geral", "ana"))

	var stop atomic.Bool
	var reads, writes atomic.Int64
	var wg sync.WaitGroup
	for r := range 4 {
		wg.Go(func() {
			for !stop.Load() {
				if _, err := s.History(ctx, HistoryQuery{Channel: "geral", Limit: 5}); err != nil {
					t.Errorf("History: %v", err)
					return
				}
				if _, err := s.History(ctx, HistoryQuery{User: "ana", Peer: "bia"}); err != nil {
					t.Errorf("History (DM): %v", err)
					return
				}
				s.Users()
				s.Channels()
				s.HasUser("ana")
				s.Replay("ana/1")
				if _, err := s.Count(ctx); err != nil {
					t.Errorf("Count: %v", err)
					return
				}
				if _, err := s.Logins(ctx, "ana"); err != nil {
					t.Errorf("Logins: %v", err)
					return
				}
				lsn, _ := s.Last()
				if _, err := s.EntriesAfter(ctx, uint64(r), 10, 1<<20); err != nil {
					t.Errorf("EntriesAfter: %v", err)
					return
				}
				if _, _, err := s.EpochAt(ctx, lsn); err != nil {
					t.Errorf("EpochAt(%d): %v", lsn, err)
					return
				}
				wctx, cancel := context.WithTimeout(ctx, time.Millisecond)
				if err := s.WaitDurable(wctx, lsn+1000); err == nil || !errors.Is(err, context.DeadlineExceeded) {
					t.Errorf("WaitDurable far ahead: %v", err)
				}
				cancel()
				reads.Add(1)
			}
		})
	}
	wg.Go(func() {
		for i := 0; !stop.Load(); i++ {
			_, _, err := s.Submit(ctx, post("geral", "ana", fmt.Sprint(i)))
			if err != nil && !errors.Is(err, ErrNoChannel) { // the channel is gone for a while after each Reset
				t.Errorf("Submit: %v", err)
				return
			}
			writes.Add(1)
		}
	})

	for i := range 5 {
		time.Sleep(50 * time.Millisecond)
		done := make(chan error, 1)
		go func() { done <- s.Reset() }()
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(20 * time.Second):
			t.Fatalf("Reset %d did not return", i)
		}
		if _, _, err := s.Submit(ctx, login("ana")); err != nil {
			t.Fatal(err)
		}
		if _, _, err := s.Submit(ctx, create("geral", "ana")); err != nil && !errors.Is(err, ErrChannelExists) {
			t.Fatal(err)
		}
	}
	time.Sleep(20 * time.Millisecond)
	stop.Store(true)
	finished := make(chan struct{})
	go func() { wg.Wait(); close(finished) }()
	select {
	case <-finished:
	case <-time.After(20 * time.Second):
		t.Fatal("the readers did not finish")
	}
	if reads.Load() == 0 || writes.Load() == 0 {
		t.Fatalf("%d reads, %d writes", reads.Load(), writes.Load())
	}
	t.Logf("%d reads, %d writes around 5 Resets", reads.Load(), writes.Load())
}

func TestWaitDurable(t *testing.T) {
	s, _ := openTest(t)
	if err := s.WaitDurable(ctx, 0); err != nil {
		t.Fatal(err)
	}
	_, lsn := mustSubmit(t, s, login("ana"))
	if err := s.WaitDurable(ctx, lsn); err != nil {
		t.Fatal(err)
	}

	// It waits for an LSN to come, and returns when it is durable.
	waited := make(chan error, 1)
	go func() { waited <- s.WaitDurable(ctx, lsn+2) }()
	mustSubmit(t, s, login("bia"))
	select {
	case err := <-waited:
		t.Fatalf("WaitDurable(%d) returned %v at %d", lsn+2, err, lsn+1)
	case <-time.After(50 * time.Millisecond):
	}
	mustSubmit(t, s, login("caio"))
	select {
	case err := <-waited:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("WaitDurable did not return once the LSN was durable")
	}

	// Cancelled, or past its deadline: ctx.Err().
	cctx, cancel := context.WithCancel(ctx)
	go func() { waited <- s.WaitDurable(cctx, lsn+100) }()
	time.Sleep(20 * time.Millisecond)
	cancel()
	select {
	case err := <-waited:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("cancelled WaitDurable: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("WaitDurable did not return on cancel")
	}
	dctx, cancel := context.WithTimeout(ctx, 10*time.Millisecond)
	defer cancel()
	if err := s.WaitDurable(dctx, lsn+100); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("WaitDurable past its deadline: %v", err)
	}

	// Durable's channel closes when an entry is appended: Submit, Append.
	d0, changed := s.Durable()
	select {
	case <-changed:
		t.Fatal("the Durable channel is closed before anything was appended")
	default:
	}
	_, l2 := mustSubmit(t, s, noop)
	select {
	case <-changed:
	case <-time.After(5 * time.Second):
		t.Fatal("the Durable channel was not closed by a Submit")
	}
	if d, _ := s.Durable(); d != l2 || d <= d0 {
		t.Fatalf("Durable = %d after %d, want %d", d, d0, l2)
	}

	r, _ := openTest(t)
	_, changed = r.Durable()
	go func() { waited <- r.WaitDurable(ctx, 2) }()
	entries, err := s.EntriesAfter(ctx, 0, 2, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Append(ctx, entries); err != nil {
		t.Fatal(err)
	}
	select {
	case <-changed:
	case <-time.After(5 * time.Second):
		t.Fatal("the Durable channel was not closed by an Append")
	}
	if err := <-waited; err != nil {
		t.Fatalf("WaitDurable on a replica: %v", err)
	}

	// Close releases the waiters: ErrClosed.
	go func() { waited <- s.WaitDurable(ctx, lsn+100) }()
	time.Sleep(20 * time.Millisecond)
	_, changed = s.Durable()
	s.Close()
	select {
	case err := <-waited:
		if !errors.Is(err, ErrClosed) {
			t.Fatalf("WaitDurable across Close: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("WaitDurable did not return at Close")
	}
	select {
	case <-changed:
	default:
		t.Fatal("Close did not close the Durable channel")
	}
	if err := s.WaitDurable(ctx, lsn+100); !errors.Is(err, ErrClosed) {
		t.Fatalf("WaitDurable after Close: %v", err)
	}
}

// TestWaitDurableAcrossReset: a waiter survives a Reset and returns when
// the new log reaches its LSN.
func TestWaitDurableAcrossReset(t *testing.T) {
	s, _ := openTest(t)
	for i := range 3 {
		mustSubmit(t, s, login(fmt.Sprint("u", i)))
	}
	waited := make(chan error, 1)
	go func() { waited <- s.WaitDurable(ctx, 5) }()
	time.Sleep(20 * time.Millisecond)
	if err := s.Reset(); err != nil {
		t.Fatal(err)
	}
	for i := range 4 {
		mustSubmit(t, s, login(fmt.Sprint("v", i)))
		select {
		case err := <-waited:
			t.Fatalf("WaitDurable(5) returned %v at %d after the Reset", err, i+1)
		default:
		}
	}
	mustSubmit(t, s, login("v5"))
	select {
	case err := <-waited:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("WaitDurable did not return after the Reset")
	}
}
