package store

import (
	"bytes"
	"database/sql"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"
)

// Disk faults (issue 9): a full disk, a damaged change log, a damaged
// SQLite file, recovery's ordering of fsync and unlink, a read-only
// directory.

// crashCopy copies the files of the store at path as a crash would leave
// them — the SQLite file, its WAL (unless noWAL: a WAL lost with the
// crash) and the log segments — into a new directory, and returns the
// path of the copy.
func crashCopy(t *testing.T, path string, noWAL bool) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "chat.db")
	if err := os.MkdirAll(dst+"-log", 0o755); err != nil {
		t.Fatal(err)
	}
	suffixes := []string{"", "-wal"}
	if noWAL {
		suffixes = suffixes[:1]
	}
	for _, suffix := range suffixes {
		if _, err := os.Stat(path + suffix); err == nil {
			copyFile(t, path+suffix, dst+suffix)
		}
	}
	segs, err := os.ReadDir(path + "-log")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range segs {
		copyFile(t, filepath.Join(path+"-log", f.Name()), filepath.Join(dst+"-log", f.Name()))
	}
	return dst
}

// frameAt is where one entry is framed in a segment file.
type frameAt struct {
	file     string
	off, len int // offset of the frame, length of its payload
	lsn      uint64
}

// framesOf lists the entries of the log of the store at path, in order.
func framesOf(t *testing.T, path string) []frameAt {
	t.Helper()
	firsts, err := segments(path + "-log")
	if err != nil {
		t.Fatal(err)
	}
	var out []frameAt
	for _, first := range firsts {
		file := filepath.Join(path+"-log", segmentName(first))
		data, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		for off := 0; off+8 <= len(data); {
			n := int(binary.BigEndian.Uint32(data[off:]))
			if n == 0 {
				break
			}
			var e entry
			if err := msgpack.Unmarshal(data[off+8:off+8+n], &e); err != nil {
				t.Fatalf("%s at %d: %v", file, off, err)
			}
			out = append(out, frameAt{file: file, off: off, len: n, lsn: e.LSN})
			off += 8 + n
		}
	}
	return out
}

// flip inverts n bytes of file from offset off.
func flip(t *testing.T, file string, off, n int) {
	t.Helper()
	f, err := os.OpenFile(file, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, n)
	if _, err := f.ReadAt(buf, int64(off)); err != nil {
		t.Fatal(err)
	}
	for i := range buf {
		buf[i] ^= 0xff
	}
	if _, err := f.WriteAt(buf, int64(off)); err != nil {
		t.Fatal(err)
	}
}

// postsOf returns the texts of the posts of channel, oldest first.
func postsOf(t *testing.T, s *Store, channel string) []string {
	t.Helper()
	var texts []string
	for _, m := range history(t, s, HistoryQuery{Channel: channel, Limit: MaxHistoryLimit}) {
		texts = append(texts, m.Text)
	}
	return texts
}

// TestCorruptLogIsReported: with SQLite's WAL lost, 16 bytes flipped in
// the middle of the change log used to drop every entry from there on
// without a word (80 of 200 posts here), and the next message took an id
// already acknowledged. Now Open says where and from which entry, and
// OpenTruncated plus replication from a peer get everything back.
func TestCorruptLogIsReported(t *testing.T) {
	peer, path := openTest(t)
	mustApply(t, peer, create("geral", "ana"))
	var want []string
	for i := range 200 {
		want = append(want, fmt.Sprintf("message number %d", i))
		mustApply(t, peer, post("geral", "ana", want[i]))
	}
	crashed := crashCopy(t, path, true)
	frames := framesOf(t, crashed)
	if len(frames) != 201 {
		t.Fatalf("%d entries in the log, want 201", len(frames))
	}
	bad := frames[120]
	flip(t, bad.file, bad.off+8+bad.len/2-8, 16)

	r, err := Open(DefaultConfig(crashed))
	if err == nil {
		defer r.Close()
		got := postsOf(t, r, "geral")
		id := mustApply(t, r, post("geral", "ana", "next"))
		t.Fatalf("Open of a log damaged at entry %d succeeded silently: %d of %d acknowledged posts readable, the next post got id %d",
			bad.lsn, len(got), len(want), id)
	}
	t.Logf("Open: %v", err)
	var ce *CorruptError
	if !errors.Is(err, ErrCorrupt) || !errors.As(err, &ce) {
		t.Fatalf("Open: %v, want a *CorruptError", err)
	}
	if ce.File != bad.file || ce.Offset != int64(bad.off) || ce.LSN != bad.lsn || ce.Seen != 201 {
		t.Fatalf("CorruptError %+v, want file %s, offset %d, LSN %d, seen 201", ce, bad.file, bad.off, bad.lsn)
	}
	if !strings.Contains(err.Error(), bad.file) || !strings.Contains(err.Error(), fmt.Sprint(bad.off)) {
		t.Fatalf("the error does not name the segment and the offset: %v", err)
	}
	if _, err := Open(DefaultConfig(crashed)); !errors.As(err, &ce) {
		t.Fatalf("a second Open: %v, want the same error (nothing was changed)", err)
	}

	// The way out: drop the entries from the damaged one, copy them from
	// the peer.
	r, err = OpenTruncated(DefaultConfig(crashed), ce.LSN)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	if l, _ := r.Last(); l != ce.LSN-1 {
		t.Fatalf("truncated: Last = %d, want %d", l, ce.LSN-1)
	}
	if got := postsOf(t, r, "geral"); !slices.Equal(got, want[:ce.LSN-2]) {
		t.Fatalf("truncated: %d posts, want the %d before the damage", len(got), ce.LSN-2)
	}
	if firsts, err := segments(crashed + ".damaged/chat.db-log"); err != nil || len(firsts) != 1 {
		t.Fatalf("the damaged segment was not kept aside: %v, %v", firsts, err)
	}
	replicate(t, peer, r, whole)
	if got := postsOf(t, r, "geral"); !slices.Equal(got, want) {
		t.Fatalf("after copying from the peer: %d posts, want %d", len(got), len(want))
	}
	if id := mustApply(t, r, post("geral", "ana", "next")); id != 201 {
		t.Fatalf("the next post got id %d, want 201", id)
	}
	r.Close()
	r = reopen(t, crashed)
	if got := postsOf(t, r, "geral"); len(got) != 201 {
		t.Fatalf("after a restart: %d posts, want 201", len(got))
	}
}

// TestCorruptLogPlaces: damage is told from a torn write wherever it is.
func TestCorruptLogPlaces(t *testing.T) {
	build := func(t *testing.T, cfg Config) (string, []frameAt) {
		s := openConfig(t, cfg)
		mustApply(t, s, create("geral", "ana"))
		for i := range 100 {
			mustApply(t, s, post("geral", "ana", fmt.Sprint("post number ", i)))
		}
		crashed := crashCopy(t, cfg.Path, true)
		return crashed, framesOf(t, crashed)
	}
	t.Run("a length zeroed", func(t *testing.T) {
		crashed, frames := build(t, Config{Path: tempPath(t)})
		f := frames[50]
		zero(t, f.file, f.off, 4) // reads as the end of the entries
		_, err := Open(DefaultConfig(crashed))
		var ce *CorruptError
		if !errors.As(err, &ce) || ce.LSN != f.lsn || ce.Offset != int64(f.off) {
			t.Fatalf("Open: %v, want damage at entry %d", err, f.lsn)
		}
	})
	t.Run("a length garbled", func(t *testing.T) {
		crashed, frames := build(t, Config{Path: tempPath(t)})
		f := frames[50]
		flip(t, f.file, f.off, 2) // a length far too large: framing lost
		_, err := Open(DefaultConfig(crashed))
		var ce *CorruptError
		if !errors.As(err, &ce) || ce.LSN != f.lsn || ce.Seen != 101 {
			t.Fatalf("Open: %v, want damage at entry %d", err, f.lsn)
		}
	})
	t.Run("the last entry of a segment", func(t *testing.T) {
		crashed, frames := build(t, Config{Path: tempPath(t), SegmentSize: 2 << 10, IndexLinger: time.Hour})
		var f frameAt
		for i := 1; i < len(frames); i++ {
			if frames[i].file != frames[i-1].file {
				f = frames[i-1]
				break
			}
		}
		flip(t, f.file, f.off+8+f.len/2, 4)
		_, err := Open(DefaultConfig(crashed))
		var ce *CorruptError
		if !errors.As(err, &ce) || ce.LSN != f.lsn {
			t.Fatalf("Open: %v, want damage at entry %d, the last of %s", err, f.lsn, f.file)
		}
		t.Logf("Open: %v", err)
	})
	t.Run("a segment lost", func(t *testing.T) {
		crashed, frames := build(t, Config{Path: tempPath(t), SegmentSize: 2 << 10, IndexLinger: time.Hour})
		f := frames[len(frames)/2]
		if err := os.Remove(f.file); err != nil {
			t.Fatal(err)
		}
		_, err := Open(DefaultConfig(crashed))
		var ce *CorruptError
		if !errors.As(err, &ce) {
			t.Fatalf("Open without the segment of entry %d: %v", f.lsn, err)
		}
		t.Logf("Open: %v", err)
	})
	t.Run("what SQLite holds", func(t *testing.T) {
		// Damage to entries SQLite already holds loses nothing: the log
		// is read on from the next sound entry.
		path := tempPath(t)
		s := openConfig(t, Config{Path: path})
		mustApply(t, s, create("geral", "ana"))
		for i := range 50 {
			mustApply(t, s, post("geral", "ana", fmt.Sprint(i)))
		}
		waitFor(t, "the indexer", func() bool {
			s.e.indexMu.Lock()
			defer s.e.indexMu.Unlock()
			return s.e.indexedLSN == 51
		})
		crashed := crashCopy(t, path, false) // SQLite holds 1..51
		for i := range 50 {
			mustApply(t, s, post("geral", "ana", fmt.Sprint(50+i)))
		}
		copyFile(t, filepath.Join(path+"-log", segmentName(1)), filepath.Join(crashed+"-log", segmentName(1)))
		frames := framesOf(t, crashed)
		if len(frames) != 101 {
			t.Fatalf("%d entries in the log", len(frames))
		}
		flip(t, frames[20].file, frames[20].off+8+3, 8)
		r := reopen(t, crashed)
		if got := postsOf(t, r, "geral"); len(got) != 100 {
			t.Fatalf("%d posts, want 100", len(got))
		}
	})
}

// zero overwrites n bytes of file from offset off with zeros.
func zero(t *testing.T, file string, off, n int) {
	t.Helper()
	f, err := os.OpenFile(file, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(make([]byte, n), int64(off)); err != nil {
		t.Fatal(err)
	}
}

// TestEntrySignature: the log reader finds sound frames after a damaged
// one by the way every entry's encoding starts; an entry with every field
// set starts so too.
func TestEntrySignature(t *testing.T) {
	full := &entry{LSN: 1 << 40, Kind: entryDirect, ID: 1 << 40, User: "u", Name: "n", To: "t", Text: "x", TS: -1,
		Clock: 1 << 63, Key: "k", Reply: []byte("r"), KeyTS: 1, HasKey: true, Epoch: 1 << 40}
	for _, e := range []*entry{{LSN: 1, Kind: entryNoop}, full} {
		buf, err := appendFrame(nil, e)
		if err != nil {
			t.Fatal(err)
		}
		if buf[8]&0xf0 != 0x80 || !bytes.Equal(buf[9:13], entrySignature) {
			t.Fatalf("entry %+v is framed as % x...", e, buf[:16])
		}
		data := append(append(make([]byte, 100), 1, 2, 3), buf...)
		if at, got := findFrame(data, 0, 0); at != 103 || got == nil || got.LSN != e.LSN {
			t.Fatalf("findFrame = %d, %+v", at, got)
		}
	}
}

// TestTornLastEntryIsAccepted: a crash in the middle of a write leaves
// the last entry cut short or garbled: that is no corruption, and the
// store opens with the entries before it.
func TestTornLastEntryIsAccepted(t *testing.T) {
	for _, how := range []string{"cut", "garbled"} {
		t.Run(how, func(t *testing.T) {
			s, path := openTest(t)
			mustApply(t, s, create("geral", "ana"))
			for i := range 50 {
				mustApply(t, s, post("geral", "ana", fmt.Sprint("post ", i)))
			}
			crashed := crashCopy(t, path, true)
			frames := framesOf(t, crashed)
			last := frames[len(frames)-1]
			switch how {
			case "cut": // the end of the frame never reached the disk
				f, err := os.OpenFile(last.file, os.O_RDWR, 0)
				if err != nil {
					t.Fatal(err)
				}
				if _, err := f.WriteAt(make([]byte, last.len/2), int64(last.off+8+last.len/2)); err != nil {
					t.Fatal(err)
				}
				f.Close()
			case "garbled":
				flip(t, last.file, last.off+8+2, 8)
			}
			r := reopen(t, crashed)
			if l, _ := r.Last(); l != last.lsn-1 {
				t.Fatalf("Last = %d, want %d", l, last.lsn-1)
			}
			if got := postsOf(t, r, "geral"); len(got) != 49 {
				t.Fatalf("%d posts, want 49", len(got))
			}
			if id := mustApply(t, r, post("geral", "ana", "next")); id != 50 {
				t.Fatalf("next id %d, want 50", id)
			}
		})
	}
}

// TestLostWALIsReported: SQLite's WAL lost while the log segments that
// held the same entries were already deleted leaves a hole between what
// SQLite holds and the first segment; it used to be served as if whole
// (48 of 300 posts here).
func TestLostWALIsReported(t *testing.T) {
	path := tempPath(t)
	peer := openConfig(t, Config{Path: path, SegmentSize: 4 << 10})
	mustApply(t, peer, create("geral", "ana"))
	for i := range 300 {
		mustApply(t, peer, post("geral", "ana", fmt.Sprint("post number ", i)))
	}
	// Wait until the indexer has deleted the first segments.
	waitFor(t, "the first segments to be deleted", func() bool {
		firsts, _ := segments(path + "-log")
		return len(firsts) > 0 && firsts[0] > 100
	})
	crashed := crashCopy(t, path, true)
	r, err := Open(DefaultConfig(crashed))
	if err == nil {
		defer r.Close()
		t.Fatalf("Open with SQLite's WAL lost succeeded silently: %d of 300 posts readable", len(postsOf(t, r, "geral")))
	}
	t.Logf("Open: %v", err)
	var ce *CorruptError
	if !errors.As(err, &ce) || ce.LSN != 1 || ce.Seen != 301 {
		t.Fatalf("Open: %v (%+v), want a *CorruptError from entry 1 that saw 301", err, ce)
	}
	r, err = OpenTruncated(DefaultConfig(crashed), ce.LSN)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if l, _ := r.Last(); l != 0 {
		t.Fatalf("truncated: Last = %d, want 0", l)
	}
	replicate(t, peer, r, whole)
	if got, want := postsOf(t, r, "geral"), postsOf(t, peer, "geral"); !slices.Equal(got, want) || len(got) != 300 {
		t.Fatalf("after copying from the peer: %d posts, want 300", len(got))
	}
}

// TestDamagedSQLiteIsRefused: 64 flipped bytes in the SQLite file used to
// be found only by the reads that hit them.
func TestDamagedSQLiteIsRefused(t *testing.T) {
	s, path := openTest(t)
	for i := range 20 {
		mustApply(t, s, login(fmt.Sprint("u", i)))
	}
	mustApply(t, s, create("geral", "ana"))
	for i := range 3000 {
		mustApply(t, s, post("geral", fmt.Sprint("u", i%20), strings.Repeat("x", 100)))
	}
	s.Close()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	// Damage a leaf page in the middle of the index that channel history
	// reads: its cell pointers.
	pages := leafPages(t, path, "messages_by_channel")
	if len(pages) < 3 {
		t.Fatalf("the index has %d leaf pages", len(pages))
	}
	const pageSize = 4096
	page := pages[len(pages)/2]
	flip(t, path, int((page-1)*pageSize)+8, 64)
	t.Logf("file of %d bytes, flipped 64 bytes in page %d, leaf %d of %d of the channel index", fi.Size(), page, len(pages)/2+1, len(pages))

	r, err := Open(DefaultConfig(path))
	if err == nil {
		defer r.Close()
		failed := 0
		for before := int64(1); before <= 3001; before += 50 {
			if _, err := r.History(ctx, HistoryQuery{Channel: "geral", Before: before}); err != nil {
				failed++
			}
		}
		t.Fatalf("Open of a damaged SQLite file succeeded; then %d of 61 history reads failed", failed)
	}
	t.Logf("Open: %v", err)
	var ce *CorruptError
	if !errors.As(err, &ce) || ce.LSN != 0 || ce.File != path {
		t.Fatalf("Open: %v, want a *CorruptError naming %s", err, path)
	}

	// A read that meets the damage says so too (without the check at Open).
	cfg := DefaultConfig(path)
	cfg.NoIntegrityCheck = true
	r, err = Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var readErr error
	for before := int64(1); before <= 3001 && readErr == nil; before += 50 {
		_, readErr = r.History(ctx, HistoryQuery{Channel: "geral", Before: before})
	}
	if !errors.Is(readErr, ErrCorrupt) {
		t.Errorf("a read of the damaged page: %v, want ErrCorrupt", readErr)
	}
	r.Close()

	// The way out: rebuild from what is readable (here the log table is
	// whole: everything).
	r, held, err := OpenRebuilt(DefaultConfig(path))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if l, _ := r.Last(); l != 3021 || held != 3021 {
		t.Fatalf("rebuilt: Last = %d, held %d, want 3021", l, held)
	}
	if got := postsOf(t, r, "geral"); len(got) != 3000 {
		t.Fatalf("rebuilt: %d posts, want 3000", len(got))
	}
	if _, err := os.Stat(path + ".damaged/chat.db"); err != nil {
		t.Errorf("the damaged file was not kept: %v", err)
	}
}

// TestRebuildFromADamagedLogTable: OpenRebuilt copies the entries in order
// up to the first it cannot read, and replication brings the rest.
func TestRebuildFromADamagedLogTable(t *testing.T) {
	peer, path := openTest(t)
	mustApply(t, peer, create("geral", "ana"))
	for i := range 3000 {
		mustApply(t, peer, post("geral", "ana", fmt.Sprint("post number ", i)))
	}
	peer.Close()
	damaged := filepath.Join(t.TempDir(), "chat.db")
	copyFile(t, path, damaged)
	peer = reopen(t, path)

	pages := leafPages(t, damaged, "log")
	flip(t, damaged, int((pages[len(pages)/2]-1)*4096)+8, 64)

	_, err := Open(DefaultConfig(damaged))
	if !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Open: %v, want ErrCorrupt", err)
	}
	r, held, err := OpenRebuilt(DefaultConfig(damaged))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	l, _ := r.Last()
	t.Logf("rebuilt %d of 3001 entries from the damaged file (which shows it held %d)", l, held)
	if l == 0 || l >= 3001 || held != 3001 {
		t.Fatalf("rebuilt: Last = %d, held %d; want a part of 3001, and 3001", l, held)
	}
	replicate(t, peer, r, whole)
	if got, want := postsOf(t, r, "geral"), postsOf(t, peer, "geral"); !slices.Equal(got, want) {
		t.Fatalf("after copying from the peer: %d posts, want %d", len(got), len(want))
	}
}

// leafPages returns the numbers of the leaf pages of the table or index
// name in the SQLite file at path.
func leafPages(t *testing.T, path, name string) []int64 {
	t.Helper()
	db, err := sql.Open("sqlite", dsn(path, true))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	rows, err := db.Query("SELECT pageno FROM dbstat WHERE name = ? AND pagetype = 'leaf' ORDER BY pageno", name)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var pages []int64
	for rows.Next() {
		var p int64
		if err := rows.Scan(&p); err != nil {
			t.Fatal(err)
		}
		pages = append(pages, p)
	}
	return pages
}

// TestRepairStopsAtDamage: when the store cannot reopen itself because a
// file is damaged, it stops trying and its writes say so (ErrCorrupt), so
// that the server can rebuild it.
func TestRepairStopsAtDamage(t *testing.T) {
	s, path := openTest(t)
	mustApply(t, s, create("geral", "ana"))
	for range 3000 {
		mustApply(t, s, post("geral", "ana", strings.Repeat("x", 100)))
	}
	s.Close()
	var failing atomic.Bool
	cfg := Config{Path: path, RetryInterval: time.Millisecond}
	cfg.hooks = &testHooks{writeErr: func() error {
		if failing.Load() {
			return syscall.EIO
		}
		return nil
	}}
	s = openConfig(t, cfg)
	s.admin.Lock() // no reopen until the file is damaged
	failing.Store(true)
	if _, err := s.Apply(ctx, post("geral", "ana", "fails")); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Apply: %v", err)
	}
	pages := leafPages(t, path, "messages_by_channel")
	flip(t, path, int((pages[len(pages)/2]-1)*4096)+8, 64)
	failing.Store(false)
	s.admin.Unlock()
	waitFor(t, "the store to give up", func() bool { return !s.repairing.Load() })
	_, err := s.Apply(ctx, post("geral", "ana", "after"))
	if !errors.Is(err, ErrCorrupt) || !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Apply once the store found the damage: %v, want ErrCorrupt", err)
	}
	t.Logf("Apply: %v", err)
	s.Close()
	r, _, err := OpenRebuilt(DefaultConfig(path))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if got := postsOf(t, r, "geral"); len(got) != 3000 {
		t.Fatalf("rebuilt: %d posts, want 3000", len(got))
	}
}

// TestReadOnlyDirectory: a data directory the server may not write used
// to be reported as "unable to open database file (14)".
func TestReadOnlyDirectory(t *testing.T) {
	for _, existing := range []bool{false, true} {
		t.Run(fmt.Sprint("existing=", existing), func(t *testing.T) {
			dir := readOnlyDir(t, func(dir string) {
				if existing {
					s := reopen(t, filepath.Join(dir, "chat.db"))
					mustApply(t, s, login("ana"))
					s.Close()
				}
			})
			s, err := Open(DefaultConfig(filepath.Join(dir, "chat.db")))
			if err == nil {
				s.Close()
				t.Fatal("Open in a read-only directory succeeded")
			}
			if !strings.Contains(err.Error(), "not writable") || !strings.Contains(err.Error(), dir) {
				t.Fatalf("Open in a read-only directory: %q; want it to say that %s is not writable", err, dir)
			}
			t.Logf("Open: %v", err)
		})
	}
}

// readOnlyDir returns a directory that fill has filled and that is then
// made read-only: a read-only tmpfs as root (root may write anything
// else), mode 0555 otherwise.
func readOnlyDir(t *testing.T, fill func(dir string)) string {
	t.Helper()
	if os.Geteuid() != 0 {
		dir := t.TempDir()
		fill(dir)
		if err := os.Chmod(dir, 0o555); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.Chmod(dir, 0o755) })
		return dir
	}
	dir := mountTmpfs(t, "64m")
	fill(dir)
	if err := syscall.Mount("tmpfs", dir, "tmpfs", syscall.MS_REMOUNT|syscall.MS_RDONLY, ""); err != nil {
		t.Skipf("cannot remount the tmpfs read-only: %v", err)
	}
	return dir
}

// mountTmpfs mounts a tmpfs of size on a fresh directory (root only) and
// unmounts it at the end of the test.
func mountTmpfs(t *testing.T, size string) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("mounting a tmpfs needs root")
	}
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size="+size); err != nil {
		t.Skipf("cannot mount a tmpfs: %v", err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, 0); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
	return dir
}

// fillDisk writes a file in dir until the file system is full and returns
// its path.
func fillDisk(t *testing.T, dir string) string {
	t.Helper()
	name := filepath.Join(dir, "filler")
	f, err := os.Create(name)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	chunk := make([]byte, 64<<10)
	for {
		if _, err := f.Write(chunk); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatal(err)
			}
			break
		}
	}
	for _, n := range []int{4096, 512, 1} { // the last few bytes too
		for {
			if _, err := f.Write(chunk[:n]); err != nil {
				break
			}
		}
	}
	return name
}

// TestDiskFullRecovers: once the disk had filled, writes kept failing
// after space was freed, until a restart. Now the store reopens itself.
func TestDiskFullRecovers(t *testing.T) {
	dir := mountTmpfs(t, "4m")
	path := filepath.Join(dir, "chat.db")
	cfg := Config{Path: path, SegmentSize: 64 << 10, RetryInterval: 10 * time.Millisecond}
	s := openConfig(t, cfg)
	mustApply(t, s, create("geral", "ana"))
	filler := fillDisk(t, dir)

	text := strings.Repeat("y", 1000)
	var acked []string
	var failure error
	for i := 0; failure == nil; i++ {
		if i == 10000 {
			t.Fatal("10,000 posts of 1 KB fit on a full 4 MB disk")
		}
		msg := fmt.Sprint(i, text)
		if _, err := s.Apply(ctx, post("geral", "ana", msg)); err != nil {
			failure = err
		} else {
			acked = append(acked, msg)
		}
	}
	t.Logf("%d posts acknowledged, then: %v", len(acked), failure)
	if !errors.Is(failure, ErrUnavailable) {
		t.Errorf("the failure does not wrap ErrUnavailable: %v", failure)
	}
	_, changed := s.Durable()
	select {
	case <-changed:
		t.Fatal("Durable's channel is closed while the store is out of service: its waiters would spin")
	default:
	}
	// Still full: the tries to reopen fail, and say why.
	waitFor(t, "a try to reopen", func() bool {
		_, err := s.Apply(ctx, post("geral", "ana", "while full"))
		return err != nil && strings.Contains(err.Error(), "reopening failed")
	})
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}

	start := time.Now()
	var err error
	for {
		if _, err = s.Apply(ctx, post("geral", "ana", "after")); err == nil {
			break
		}
		if time.Since(start) > 10*time.Second {
			t.Fatalf("writes still fail 10 s after space was freed: %v", err)
		}
		time.Sleep(time.Millisecond) // polling, not synchronisation
	}
	t.Logf("writes work again %v after space was freed", time.Since(start).Round(time.Millisecond))
	select {
	case <-changed:
	default:
		t.Error("Durable's channel was not closed when the store came back")
	}
	check := func(s *Store) {
		t.Helper()
		got := postsOf(t, s, "geral")
		seen := map[string]bool{}
		for _, m := range got {
			seen[m] = true
		}
		for _, m := range append(acked, "after") {
			if !seen[m] {
				t.Fatalf("acknowledged post %.8q... lost (%d posts)", m, len(got))
			}
		}
	}
	check(s)
	s.Close()
	check(openConfig(t, cfg))
}

// TestResetOnAFullDisk: a Reset (or TruncateAfter) that cannot open the
// store again used to close it for good; now it reopens itself later.
func TestResetOnAFullDisk(t *testing.T) {
	dir := mountTmpfs(t, "4m")
	path := filepath.Join(dir, "chat.db")
	s := openConfig(t, Config{Path: path, SegmentSize: 1 << 20, RetryInterval: 10 * time.Millisecond})
	mustApply(t, s, login("ana"))
	filler := fillDisk(t, dir)
	if err := s.Reset(); err == nil {
		t.Fatal("Reset on a full disk succeeded")
	} else {
		t.Logf("Reset: %v", err)
	}
	if _, err := s.Apply(ctx, login("bia")); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Apply after the failed Reset: %v, want ErrUnavailable", err)
	}
	os.Remove(filler)
	waitFor(t, "the store to reopen", func() bool {
		_, err := s.Apply(ctx, login("bia"))
		return err == nil
	})
	if got := s.Users(); !slices.Equal(got, []string{"bia"}) {
		t.Fatalf("users %v after the Reset, want [bia]", got)
	}
}

// TestWriteAndFsyncFailuresRecover: a failed write or fsync of the change
// log puts the store out of service until it has reopened itself; only
// what is on disk then counts. A change whose fsync failed may be there
// (its request key tells), one whose write failed is not.
func TestWriteAndFsyncFailuresRecover(t *testing.T) {
	for _, what := range []string{"write", "fsync"} {
		t.Run(what, func(t *testing.T) {
			var failing atomic.Bool
			fault := func() error {
				if failing.Load() {
					return syscall.EIO
				}
				return nil
			}
			cfg := Config{Path: tempPath(t), RetryInterval: time.Millisecond}
			cfg.hooks = &testHooks{}
			if what == "write" {
				cfg.hooks.writeErr = fault
			} else {
				cfg.hooks.syncErr = fault
			}
			s := openConfig(t, cfg)
			mustApply(t, s, login("ana"))
			s.admin.Lock() // the store cannot reopen until the checks below are done
			failing.Store(true)
			_, err := s.Apply(ctx, Change{Login: &Login{User: "bia"}, RequestKey: "bia/1", Reply: []byte("ok")})
			if !errors.Is(err, ErrUnavailable) || !errors.Is(err, syscall.EIO) {
				t.Fatalf("Apply with a failing %s: %v", what, err)
			}
			if _, err := s.Apply(ctx, login("caio")); !errors.Is(err, ErrUnavailable) {
				t.Fatalf("Apply after a failed %s: %v", what, err)
			}
			if got := s.Users(); !slices.Equal(got, []string{"ana"}) {
				t.Fatalf("users %v while out of service", got)
			}
			failing.Store(false)
			s.admin.Unlock()
			waitFor(t, "the store to reopen", func() bool {
				_, err := s.Apply(ctx, login("dora"))
				return err == nil
			})
			_, replayed := s.Replay("bia/1")
			want := []string{"ana", "dora"}
			if what == "fsync" { // written, then read back by the reopen
				want = []string{"ana", "bia", "dora"}
			}
			if got := s.Users(); !slices.Equal(got, want) || replayed != (what == "fsync") {
				t.Fatalf("users %v, bia/1 replayed %v; want %v", got, replayed, want)
			}
		})
	}
}

// TestFsyncFailureThenLostPages: after a failed fsync the pages of the
// batch may never reach the disk (Linux marks them clean anyway). A later
// batch whose own fsync succeeded used to be acknowledged, so the log
// could hold a hole before an acknowledged entry; and the reopen, finding
// that hole, would give up. Now nothing is acknowledged after a failed
// fsync, and the reopen drops what follows the last acknowledged entry
// when it is damaged.
func TestFsyncFailureThenLostPages(t *testing.T) {
	var calls atomic.Int32
	release := make(chan struct{})
	cfg := Config{Path: tempPath(t), RetryInterval: time.Millisecond, SyncInterval: -1}
	cfg.hooks = &testHooks{syncErr: func() error {
		if calls.Add(1) == 2 { // the fsync of b1
			<-release
			return syscall.EIO
		}
		return nil
	}}
	s := openConfig(t, cfg)
	mustApply(t, s, login("a0"))
	errs := make(chan error, 2)
	go func() { _, err := s.Apply(ctx, login("b1")); errs <- err }()
	waitFor(t, "the fsync of b1", func() bool { return calls.Load() == 2 })
	go func() { _, err := s.Apply(ctx, login("b2")); errs <- err }()
	waitFor(t, "b2 to be written", func() bool { return len(framesOf(t, s.e.cfg.Path)) == 3 })
	s.admin.Lock() // no reopen yet
	close(release)
	err1, err2 := <-errs, <-errs
	if err1 == nil || err2 == nil {
		s.admin.Unlock()
		t.Fatalf("b1: %v, b2: %v; an entry written after a failed fsync was acknowledged", err1, err2)
	}
	frames := framesOf(t, s.e.cfg.Path)
	zero(t, frames[1].file, frames[1].off, 8+frames[1].len) // b1's pages never reached the disk
	s.admin.Unlock()
	waitFor(t, "the store to reopen", func() bool {
		_, err := s.Apply(ctx, login("c3"))
		if errors.Is(err, ErrCorrupt) {
			t.Fatalf("the reopen gave up: %v", err)
		}
		return err == nil
	})
	if got := s.Users(); !slices.Equal(got, []string{"a0", "c3"}) {
		t.Fatalf("users %v, want [a0 c3]", got)
	}
}

// TestTruncateAfterAFailure: TruncateAfter on a store out of service
// (whose log SQLite lacks) applies the log first, and leaves the store
// working.
func TestTruncateAfterAFailure(t *testing.T) {
	var failing atomic.Bool
	cfg := Config{Path: tempPath(t), RetryInterval: time.Hour, IndexLinger: time.Hour} // no repair, no indexing
	cfg.hooks = &testHooks{writeErr: func() error {
		if failing.Load() {
			return syscall.EIO
		}
		return nil
	}}
	s := openConfig(t, cfg)
	var keep uint64
	for i := range 5 {
		_, lsn := mustSubmit(t, s, login(fmt.Sprint("u", i)))
		if i == 2 {
			keep = lsn
		}
	}
	failing.Store(true)
	if _, err := s.Apply(ctx, login("x")); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Apply: %v", err)
	}
	failing.Store(false)
	if err := s.TruncateAfter(keep); err != nil {
		t.Fatal(err)
	}
	if got := s.Users(); !slices.Equal(got, []string{"u0", "u1", "u2"}) {
		t.Fatalf("users %v after the truncation", got)
	}
	mustApply(t, s, login("after"))
}

// TestIndexFailureLeavesNoHole: after a failed SQLite transaction the
// indexer went on with the next ones, so SQLite's applied_lsn passed
// entries it lacked and the reopen never applied them.
func TestIndexFailureLeavesNoHole(t *testing.T) {
	path := tempPath(t)
	gate := make(chan struct{})
	var calls atomic.Int32
	cfg := Config{Path: path, RetryInterval: 10 * time.Millisecond, IndexLinger: time.Microsecond}
	cfg.hooks = &testHooks{indexErr: func() error {
		if calls.Add(1) == 1 {
			<-gate // the next change is acknowledged meanwhile
			return errors.New("injected: disk full")
		}
		return nil
	}}
	s := openConfig(t, cfg)
	mustApply(t, s, login("first")) // its transaction will fail
	waitFor(t, "the indexer to take the first entry", func() bool { return calls.Load() == 1 })
	mustApply(t, s, login("second")) // acknowledged, not indexed yet
	failed := s.e
	close(gate)
	waitFor(t, "the store to reopen", func() bool {
		s.mu.RLock()
		defer s.mu.RUnlock()
		return s.e != failed
	})
	mustApply(t, s, login("third"))
	for _, u := range []string{"first", "second", "third"} {
		if logins, err := s.Logins(ctx, u); err != nil || len(logins) == 0 {
			t.Errorf("%s: logins %v, %v: lost", u, logins, err)
		}
	}
}

// TestRecoverSyncsSQLiteBeforeDeletingTheLog: recovery copied the log
// into SQLite (whose commits do not fsync) and unlinked the segments with
// no fsync in between: a power loss then could lose both copies.
func TestRecoverSyncsSQLiteBeforeDeletingTheLog(t *testing.T) {
	path := tempPath(t)
	s := openConfig(t, Config{Path: path, IndexLinger: time.Hour}) // nothing reaches SQLite
	mustApply(t, s, create("geral", "ana"))
	for i := range 20 {
		mustApply(t, s, post("geral", "ana", fmt.Sprint(i)))
	}
	crashed := crashCopy(t, path, false)

	var mu sync.Mutex
	var events []string
	cfg := DefaultConfig(crashed)
	cfg.hooks = &testHooks{event: func(what string) {
		mu.Lock()
		events = append(events, what)
		mu.Unlock()
	}}
	r := openConfig(t, cfg)
	if got := postsOf(t, r, "geral"); len(got) != 20 {
		t.Fatalf("%d posts recovered, want 20", len(got))
	}
	mu.Lock()
	defer mu.Unlock()
	synced, removed := true, false
	for _, ev := range events {
		switch {
		case ev == "index":
			synced = false
		case ev == "sync sqlite":
			synced = true
		case strings.HasPrefix(ev, "remove "):
			removed = true
			if !synced {
				t.Fatalf("recovery deleted a log segment before fsyncing what it had written to SQLite: %q", events)
			}
		}
		if removed {
			break
		}
	}
	if !removed {
		t.Fatalf("recovery deleted no segment: %q", events)
	}
	t.Logf("recovery: %q", events)
}
