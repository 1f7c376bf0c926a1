package store

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/vmihailenco/msgpack/v5"
	"modernc.org/sqlite"
)

// Damaged files. Open refuses a store whose files are damaged, with a
// *CorruptError (errors.Is(err, ErrCorrupt)), rather than serve a history
// with a hole or extend it:
//
//   - the change log: an entry that is not sound (cut short, failing its
//     checksum) followed by sound ones, or a log that starts after SQLite's
//     last entry. CorruptError.LSN is the first entry lost. OpenTruncated
//     opens the store without the entries from there on (replication
//     then copies them again from another server). A torn last entry, as a
//     crash in the middle of a write leaves it, is no damage: Open accepts
//     it silently, as before.
//   - the SQLite file: PRAGMA quick_check at Open (Config.NoIntegrityCheck
//     skips it) or a read that finds it malformed. CorruptError.LSN is 0.
//     OpenRebuilt sets the files aside and builds a new store from every
//     entry still readable in them, in order (replication copies the rest).
//
// quick_check reads the whole file: measured on this project's machine, 37
// ms for a store of 100,000 messages (17 MB), so about 2 ms per MB. It is
// done anyway: the b-tree pages that a cheaper check (the header, the
// schema, the interior pages) would read are a few per cent of the file,
// and damage anywhere else, in a leaf page, would pass it (as the damage
// of issue 9 did: it made a fifth of the history reads fail).

// CorruptError reports damaged files.
type CorruptError struct {
	File   string // the damaged file
	Offset int64  // where in File the damage is; -1 when unknown
	// LSN is the first change log entry lost: the store holds the
	// entries before it. 0 when the SQLite file is damaged.
	LSN uint64
	// Seen is the last sound entry found after the damage: this store
	// held at least the entries up to Seen (0 when unknown).
	Seen   uint64
	Reason string
}

func (e *CorruptError) Error() string {
	where := e.File
	if e.Offset >= 0 {
		where = fmt.Sprintf("%s at offset %d", e.File, e.Offset)
	}
	if e.LSN > 0 {
		return fmt.Sprintf("store: the change log is damaged: %s: %s (OpenTruncated opens the store with the entries before %d only, for replication to copy the others again)",
			where, e.Reason, e.LSN)
	}
	return fmt.Sprintf("store: the database is damaged: %s: %s (OpenRebuilt sets the files aside and rebuilds the store from what is readable)", where, e.Reason)
}

// Unwrap makes errors.Is(err, ErrCorrupt) true.
func (e *CorruptError) Unwrap() error { return ErrCorrupt }

// sqliteDamaged reports whether err is SQLite finding its file malformed
// (SQLITE_CORRUPT) or not a database at all (SQLITE_NOTADB).
func sqliteDamaged(err error) bool {
	var se *sqlite.Error
	if !errors.As(err, &se) {
		return false
	}
	switch se.Code() & 0xff {
	case 11, 26: // SQLITE_CORRUPT, SQLITE_NOTADB
		return true
	}
	return false
}

// sqlErr turns SQLite's errors about a damaged file into a *CorruptError
// naming the file, and returns the others as they are.
func (s *engine) sqlErr(err error) error {
	var ce *CorruptError
	if err == nil || errors.As(err, &ce) || !sqliteDamaged(err) {
		return err
	}
	return &CorruptError{File: s.cfg.Path, Offset: -1, Reason: err.Error()}
}

// quickCheck runs SQLite's quick_check on db (the file at path).
func quickCheck(db *sql.DB, path string) error {
	rows, err := db.Query("PRAGMA quick_check(3)")
	if err != nil {
		return err
	}
	defer rows.Close()
	var problems []string
	for rows.Next() {
		var line string
		if err := rows.Scan(&line); err != nil {
			return err
		}
		problems = append(problems, strings.ReplaceAll(strings.TrimPrefix(line, "*** in database main ***\n"), "\n", "; "))
	}
	if err := rows.Err(); err != nil {
		return err
	}
	if len(problems) == 1 && problems[0] == "ok" {
		return nil
	}
	return &CorruptError{File: path, Offset: -1, Reason: "quick_check: " + strings.Join(problems, "; ")}
}

// checkWritable makes sure that the store can write where it must: the
// data directory (SQLite creates its -wal and -shm files there, the store
// its -log directory), the log directory and the files that exist.
// Without it, SQLite only says "unable to open database file".
func checkWritable(path string) error {
	dir := filepath.Dir(path)
	for _, d := range []string{dir, path + "-log"} {
		f, err := os.CreateTemp(d, ".write-test-*")
		switch {
		case err == nil:
			f.Close()
			os.Remove(f.Name())
		case d != dir && errors.Is(err, os.ErrNotExist):
			// no log directory yet: created in the data directory
		case errors.Is(err, os.ErrNotExist):
			return fmt.Errorf("store: the data directory %s does not exist", dir)
		case errors.Is(err, os.ErrPermission) || errors.Is(err, syscall.EROFS):
			return fmt.Errorf("store: the data directory %s is not writable: %w", d, err)
		default:
			return fmt.Errorf("store: cannot write in the data directory %s: %w", d, err)
		}
	}
	for _, suffix := range []string{"", "-wal", "-shm"} {
		f, err := os.OpenFile(path+suffix, os.O_RDWR, 0)
		if err == nil {
			f.Close()
			continue
		}
		if !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("store: %s is not writable: %w", path+suffix, err)
		}
	}
	return nil
}

// setAside moves the files of the store at path (the SQLite file, its WAL
// and shared memory, the log directory) into the directory path+suffix,
// replacing an older copy, and returns that directory.
func setAside(path, suffix string) (string, error) {
	dir := path + suffix
	if err := os.RemoveAll(dir); err != nil {
		return "", err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	for _, sfx := range []string{"", "-wal", "-shm", "-log"} {
		if err := os.Rename(path+sfx, filepath.Join(dir, baseName(path)+sfx)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return "", err
		}
	}
	return dir, syncDir(filepath.Dir(path))
}

// OpenTruncated opens the store like Open, but without the change log
// entries from lsn on: the store holds the entries before lsn and goes on
// from there. It is the way out of a damaged change log (lsn is
// CorruptError.LSN): the log's segment files are kept in Path+".damaged"
// (replacing an older copy), and replication copies the entries from lsn
// on again from another server. A damage found before lsn is still
// reported.
func OpenTruncated(cfg Config, lsn uint64) (*Store, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if lsn == 0 {
		return nil, errors.New("store: OpenTruncated needs the LSN of the first entry to drop")
	}
	if err := checkWritable(cfg.Path); err != nil {
		return nil, err
	}
	applied, err := appliedLSN(cfg.Path)
	if err != nil {
		return nil, fmt.Errorf("store: open %s: %w", cfg.Path, err)
	}
	if applied >= lsn { // SQLite holds entries to drop too
		if err := undoAfter(cfg.Path, lsn-1); err != nil {
			return nil, fmt.Errorf("store: open %s: dropping the entries from %d: %w", cfg.Path, lsn, err)
		}
	}
	return open(cfg, openOptions{dropFrom: lsn})
}

// appliedLSN returns the last entry SQLite holds in the file at path (0
// when there is no file).
func appliedLSN(path string) (uint64, error) {
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	db, err := sql.Open("sqlite", dsn(path, false))
	if err != nil {
		return 0, err
	}
	defer db.Close()
	var tables int
	if err := db.QueryRow("SELECT count(*) FROM sqlite_schema WHERE name = 'meta'").Scan(&tables); err != nil || tables == 0 {
		return 0, err
	}
	var applied int64
	err = db.QueryRow("SELECT coalesce((SELECT value FROM meta WHERE key = 'applied_lsn'), 0)").Scan(&applied)
	return uint64(applied), err
}

// OpenRebuilt is the way out of a damaged SQLite file. It moves the
// store's files into Path+".damaged" (replacing an older copy), opens a
// new, empty store and copies into it every entry still readable there,
// in order from the first: from the old file's log table, then from its
// change log, up to the first entry that cannot be read. The store then
// holds a prefix of its old log, perhaps all of it (Last tells how much),
// and replication copies the rest from another server.
//
// held is the last entry the damaged files show the store held (0 when
// they show nothing): this server had entries up to there at least, and
// may have acknowledged them to a coordinator.
func OpenRebuilt(cfg Config) (st *Store, held uint64, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, 0, err
	}
	if err := checkWritable(cfg.Path); err != nil {
		return nil, 0, err
	}
	dir, err := setAside(cfg.Path, ".damaged")
	if err != nil {
		return nil, 0, fmt.Errorf("store: rebuild %s: setting the damaged files aside: %w", cfg.Path, err)
	}
	if st, err = Open(cfg); err != nil {
		return nil, 0, err
	}
	if held, err = copyReadable(st, filepath.Join(dir, baseName(cfg.Path))); err != nil {
		st.Close()
		return nil, 0, fmt.Errorf("store: rebuild %s: %w", cfg.Path, err)
	}
	return st, held, nil
}

// copyReadable appends to st the entries readable, in order from the
// first, in the store files at old: its log table, then its change log.
// Damage ends the copy; only a failure to append is an error. It returns
// the last entry the files show they held, read or not.
func copyReadable(st *Store, old string) (held uint64, err error) {
	ctx := context.Background()
	var batch []Entry
	var appendErr error
	last := uint64(0)
	add := func(e Entry) error {
		batch = append(batch, e)
		last = e.LSN
		if len(batch) >= 1024 {
			appendErr = flush(ctx, st, &batch)
		}
		return appendErr
	}
	if db, err := sql.Open("sqlite", dsn(old, true)); err == nil {
		readLogTable(db, add) // up to the first entry it cannot read
		for _, q := range []string{"SELECT max(lsn) FROM log", "SELECT value FROM meta WHERE key = 'applied_lsn'"} {
			var n sql.NullInt64
			if db.QueryRow(q).Scan(&n) == nil && n.Valid {
				held = max(held, uint64(n.Int64))
			}
		}
		db.Close()
	}
	if firsts, err := segments(old + "-log"); err == nil && len(firsts) > 0 {
		if appendErr == nil {
			replayLog(old+"-log", firsts, last, 0, func(e *entry) error { // up to the first damage
				return add(Entry{LSN: e.LSN, Epoch: e.Epoch, Data: bytes.Clone(e.raw)})
			})
		}
		r := &logReader{dir: old + "-log", firsts: firsts, cached: -1}
		held = max(held, r.last(), firsts[len(firsts)-1]-1)
	}
	if appendErr != nil {
		return 0, appendErr
	}
	return max(held, last), flush(ctx, st, &batch)
}

// flush appends the entries of batch to st and empties it.
func flush(ctx context.Context, st *Store, batch *[]Entry) error {
	if len(*batch) == 0 {
		return nil
	}
	_, err := st.Append(ctx, *batch)
	*batch = nil // the store keeps the entries
	return err
}

// readLogTable calls fn with the entries of db's log table in order from
// the first, and stops at the first that is missing or unreadable (an
// error of SQLite, or a *CorruptError) or at an error of fn.
func readLogTable(db *sql.DB, fn func(Entry) error) error {
	after := uint64(0)
	for {
		rows, err := db.Query("SELECT lsn, epoch, entry FROM log WHERE lsn > ? ORDER BY lsn LIMIT 1024", int64(after))
		if err != nil {
			return err
		}
		n := 0
		for rows.Next() {
			var lsn, epoch int64
			var data []byte
			if err := rows.Scan(&lsn, &epoch, &data); err != nil {
				rows.Close()
				return err
			}
			var e entry
			if uint64(lsn) != after+1 || msgpack.Unmarshal(data, &e) != nil || e.LSN != uint64(lsn) || e.Epoch != uint64(epoch) {
				rows.Close()
				return &CorruptError{Offset: -1, LSN: after + 1, Reason: fmt.Sprintf("the log table lacks entry %d or holds it damaged", after+1)}
			}
			if err := fn(Entry{LSN: uint64(lsn), Epoch: uint64(epoch), Data: data}); err != nil {
				rows.Close()
				return err
			}
			after = uint64(lsn)
			n++
		}
		err = rows.Err()
		rows.Close()
		if err != nil || n == 0 {
			return err
		}
	}
}
