package store

import (
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// The indexer copies durable log entries into SQLite, in large
// transactions, off the path of any request. SQLite is where reads come
// from: History and Logins first wait until the indexer has caught up with
// everything acknowledged, so a client always reads its own writes. Each
// transaction also records the last LSN it applied (table meta), so after
// a crash Open applies exactly the entries SQLite lacks.

// pruneEvery is how often the indexer deletes expired request keys.
const pruneEvery = time.Minute

// statements are the indexer's SQL statements, prepared once at Open.
type statements struct {
	pruneKeys, setApplied                                 *sql.Stmt
	insertLogin, insertUser, insertChannel                *sql.Stmt
	insertAccount, setPublicKey, insertToken, deleteToken *sql.Stmt
	pruneTokens                                           *sql.Stmt
	// The rows most entries add, inserted many at a time (insertRows).
	storeKeys, insertLogs, insertMessages *multiInsert
}

func prepare(db *sql.DB) (*statements, error) {
	var st statements
	for _, p := range []struct {
		stmt  **sql.Stmt
		query string
	}{
		{&st.pruneKeys, "DELETE FROM requests WHERE created_ms < ?"},
		{&st.setApplied, "INSERT INTO meta (key, value) VALUES ('applied_lsn', ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value"},
		{&st.insertLogin, "INSERT INTO logins (user, ts_ms) VALUES (?, ?)"},
		{&st.insertUser, "INSERT OR IGNORE INTO users (name, first_seen_ms) VALUES (?, ?)"},
		{&st.insertChannel, "INSERT OR IGNORE INTO channels (name, creator, created_ms) VALUES (?, ?, ?)"},
		{&st.insertAccount, "INSERT OR REPLACE INTO accounts (name, password_hash, public_key, created_ms) VALUES (?, ?, ?, ?)"},
		{&st.setPublicKey, "UPDATE accounts SET public_key = ? WHERE name = ?"},
		{&st.insertToken, "INSERT OR REPLACE INTO tokens (token_sha256, user, expires_ms) VALUES (?, ?, ?)"},
		{&st.deleteToken, "DELETE FROM tokens WHERE token_sha256 = ?"},
		{&st.pruneTokens, "DELETE FROM tokens WHERE expires_ms <= ?"},
	} {
		var err error
		if *p.stmt, err = db.Prepare(p.query); err != nil {
			return nil, err
		}
	}
	for _, p := range []struct {
		ins                 **multiInsert
		head, row, conflict string
	}{
		{&st.storeKeys, "INSERT INTO requests (request_key, reply, created_ms) VALUES ", "(?, ?, ?)",
			" ON CONFLICT (request_key) DO UPDATE SET reply = excluded.reply, created_ms = excluded.created_ms"},
		{&st.insertLogs, "INSERT OR REPLACE INTO log (lsn, epoch, entry) VALUES ", "(?, ?, ?)", ""},
		{&st.insertMessages, "INSERT OR IGNORE INTO messages (id, channel, sender, recipient, text, ts_ms, clock) VALUES ",
			"(?, ?, ?, ?, ?, ?, ?)", ""},
	} {
		var err error
		if *p.ins, err = prepareMulti(db, p.head, p.row, p.conflict); err != nil {
			return nil, err
		}
	}
	return &st, nil
}

// Multi-row inserts. Each Exec through database/sql and the driver costs
// about as much as the row it inserts (BenchmarkIndex), so the indexer
// inserts the rows of the log, of the messages and of the request keys
// many per statement: INSERT ... VALUES (...), (...), ..., prepared at
// Open for each number of rows in rowCounts. n rows take the largest that
// fits, then the largest that fits the rest, and so on: at most
// len(rowCounts) statements for any rest. (Measured, 100 posts in a
// transaction: a quarter cheaper than with one-row statements for the
// rest, and preparing a statement for the rest in each transaction costs
// more than either.) The largest, 128 rows of at most 7 parameters, stays
// far below SQLite's limit of 32766 parameters.
var rowCounts = []int{128, 64, 32, 16, 8, 4, 2, 1}

// multiInsert is one INSERT prepared for each of rowCounts.
type multiInsert struct {
	cols  int         // parameters per row
	stmts []*sql.Stmt // stmts[i] inserts rowCounts[i] rows
}

// prepareMulti prepares head, then rows times row separated by commas,
// then conflict, for each of rowCounts.
func prepareMulti(db *sql.DB, head, row, conflict string) (*multiInsert, error) {
	m := &multiInsert{cols: strings.Count(row, "?")}
	for _, n := range rowCounts {
		stmt, err := db.Prepare(head + strings.Repeat(row+", ", n-1) + row + conflict)
		if err != nil {
			return nil, err
		}
		m.stmts = append(m.stmts, stmt)
	}
	return m, nil
}

// insertRows gathers the rows of one multiInsert within a transaction and
// inserts them a statement at a time, keeping their order.
type insertRows struct {
	m     *multiInsert
	tx    *sql.Tx
	stmts []*sql.Stmt // the transaction's copies of m.stmts, made on first use
	args  []any       // the parameters of the rows not inserted yet
}

// rowsIn starts gathering rows for m in tx.
func (m *multiInsert) rowsIn(tx *sql.Tx) *insertRows {
	return &insertRows{m: m, tx: tx, stmts: make([]*sql.Stmt, len(m.stmts))}
}

// add adds one row; it inserts the rows gathered when they fill the
// largest statement.
func (r *insertRows) add(args ...any) error {
	r.args = append(r.args, args...)
	if len(r.args) < rowCounts[0]*r.m.cols {
		return nil
	}
	return r.flush()
}

// flush inserts the rows gathered.
func (r *insertRows) flush() error {
	args := r.args
	for i, n := range rowCounts {
		for len(args) >= n*r.m.cols {
			if r.stmts[i] == nil {
				r.stmts[i] = r.tx.Stmt(r.m.stmts[i])
			}
			if _, err := r.stmts[i].Exec(args[:n*r.m.cols]...); err != nil {
				return err
			}
			args = args[n*r.m.cols:]
		}
	}
	clear(r.args) // let the collector have the values
	r.args = r.args[:0]
	return nil
}

// indexer is the indexer goroutine: it applies entries until the syncer
// closes its channel.
func (s *engine) indexer() {
	defer close(s.indexed)
	defer s.stopWaiting()
	failed := false
	for first := range s.toIndex {
		entries := s.gather(first)
		if failed {
			// Nothing more goes into SQLite, or its applied_lsn would
			// pass the entries that failed: the reopen applies the log
			// from where SQLite stopped.
			continue
		}
		if err := s.index(entries); err != nil {
			// SQLite refused what the log holds (a full disk): reads
			// would go stale, so they fail instead, and writes stop
			// until the store has reopened itself.
			failed = true
			s.fail(fmt.Errorf("store: SQLite: %w", s.sqlErr(err)))
			s.stopWaiting()
			continue
		}
		last := entries[len(entries)-1].LSN
		s.setIndexed(last)
		s.forgetIndexedKeys(last, time.Now())
		s.dropIndexedSegments(last)
	}
}

// gather returns first and the entries that arrive within IndexLinger,
// up to IndexBatch: a few large transactions cost SQLite far less than
// many small ones.
func (s *engine) gather(first []*entry) []*entry {
	entries := first
	linger := time.NewTimer(s.cfg.IndexLinger)
	defer linger.Stop()
	for len(entries) < s.cfg.IndexBatch {
		select {
		case next, ok := <-s.toIndex:
			if !ok {
				return entries
			}
			entries = append(entries, next...)
		case <-linger.C:
			return entries
		case <-s.readerWaits:
			return entries // a read waits for these: index them now
		}
	}
	return entries
}

// index applies entries in one transaction.
func (s *engine) index(entries []*entry) error {
	if h := s.cfg.hooks; h != nil && h.indexErr != nil {
		if err := h.indexErr(); err != nil {
			return err
		}
	}
	tx, err := s.wdb.Begin()
	if err != nil {
		return err
	}
	defer tx.Rollback() // a no-op after Commit
	logs, messages, keys := s.stmts.insertLogs.rowsIn(tx), s.stmts.insertMessages.rowsIn(tx), s.stmts.storeKeys.rowsIn(tx)
	// flush inserts the rows gathered. It runs before the effects of an
	// entry other than a message, so that those keep their place in the
	// log's order. The rows gathered keep their order within each table;
	// between the tables it does not matter (no trigger or foreign key
	// joins them).
	flush := func() error {
		for _, rows := range []*insertRows{logs, messages, keys} {
			if err := rows.flush(); err != nil {
				return err
			}
		}
		return nil
	}
	for _, e := range entries {
		if err = logs.add(int64(e.LSN), int64(e.Epoch), e.raw); err != nil {
			return err
		}
		switch e.Kind {
		case entryLogin:
			if err = flush(); err == nil {
				_, err = tx.Stmt(s.stmts.insertLogin).Exec(e.User, e.TS)
			}
			if err == nil {
				_, err = tx.Stmt(s.stmts.insertUser).Exec(e.User, e.TS)
			}
			if err == nil {
				err = s.indexAccount(tx, e)
			}
		case entryLogout:
			if err = flush(); err == nil {
				_, err = tx.Stmt(s.stmts.deleteToken).Exec(e.Token)
			}
		case entryChannel:
			if err = flush(); err == nil {
				_, err = tx.Stmt(s.stmts.insertChannel).Exec(e.Name, e.User, e.TS)
			}
		case entryPost:
			err = messages.add(e.ID, e.Name, e.User, nil, e.Text, e.TS, int64(e.Clock))
		case entryDirect:
			err = messages.add(e.ID, nil, e.User, e.To, e.Text, e.TS, int64(e.Clock))
		}
		if err == nil && e.HasKey {
			reply := e.Reply
			if reply == nil {
				reply = []byte{}
			}
			err = keys.add(e.Key, reply, e.KeyTS)
		}
		if err != nil {
			return err
		}
	}
	if err := flush(); err != nil {
		return err
	}
	if _, err := tx.Stmt(s.stmts.setApplied).Exec(int64(entries[len(entries)-1].LSN)); err != nil {
		return err
	}
	if now := time.Now(); now.Sub(s.lastPrune) >= pruneEvery {
		if _, err := tx.Stmt(s.stmts.pruneKeys).Exec(now.Add(-s.cfg.RequestKeyTTL).UnixMilli()); err != nil {
			return err
		}
		if _, err := tx.Stmt(s.stmts.pruneTokens).Exec(now.UnixMilli()); err != nil {
			return err
		}
		s.lastPrune = now
	}
	if err := tx.Commit(); err != nil {
		return err
	}
	s.event("index")
	return nil
}

// indexAccount stores what a login entry does to the accounts.
func (s *engine) indexAccount(tx *sql.Tx, e *entry) error {
	var err error
	switch {
	case e.Claim:
		_, err = tx.Stmt(s.stmts.insertAccount).Exec(e.User, e.Hash, e.PubKey, e.TS)
	case e.PubKey != "":
		_, err = tx.Stmt(s.stmts.setPublicKey).Exec(e.PubKey, e.User)
	}
	if err == nil && e.Token != "" {
		_, err = tx.Stmt(s.stmts.insertToken).Exec(e.Token, e.User, e.Expires)
	}
	return err
}

// setIndexed records that everything up to lsn is in SQLite and wakes the
// readers waiting for it.
func (s *engine) setIndexed(lsn uint64) {
	s.indexMu.Lock()
	s.indexedLSN = lsn
	s.indexMu.Unlock()
	s.indexCond.Broadcast()
}

// stopWaiting releases every reader waiting for the indexer, for good: at
// Close, or when the indexer has failed.
func (s *engine) stopWaiting() {
	s.indexMu.Lock()
	s.indexDone = true
	s.indexMu.Unlock()
	s.indexCond.Broadcast()
}

// waitIndexed blocks until SQLite holds everything acknowledged so far.
// It fails when the indexer has stopped short of that (it failed): a read
// of SQLite would miss acknowledged changes.
func (s *engine) waitIndexed() error {
	target := s.ackedLSN.Load()
	s.indexMu.Lock()
	defer s.indexMu.Unlock()
	if s.indexedLSN < target {
		select { // cut the indexer's linger short
		case s.readerWaits <- struct{}{}:
		default:
		}
	}
	for s.indexedLSN < target && !s.indexDone {
		s.indexCond.Wait()
	}
	if s.indexedLSN < target {
		if err := s.failure(); err != nil {
			return err
		}
		return fmt.Errorf("%w: SQLite lacks acknowledged entries", ErrUnavailable)
	}
	return nil
}

// dropIndexedSegments deletes the log segments whose entries are all in
// SQLite. The segment being written is never among them.
func (s *engine) dropIndexedSegments(lsn uint64) {
	s.segMu.Lock()
	defer s.segMu.Unlock()
	if len(s.segFirsts) < 2 || s.segFirsts[1] > lsn+1 {
		return // nothing to delete
	}
	if err := s.syncSQLite(); err != nil {
		return // keep the log: it is the durable copy
	}
	n := 0
	for n+1 < len(s.segFirsts) && s.segFirsts[n+1] <= lsn+1 {
		os.Remove(filepath.Join(s.logDir, segmentName(s.segFirsts[n])))
		n++
	}
	s.segFirsts = s.segFirsts[n:]
}

// syncSQLite makes every committed SQLite transaction durable by fsyncing
// SQLite's write-ahead log (its commits do not, see dsn), so that the
// change log segments they came from may be deleted.
func (s *engine) syncSQLite() error {
	f, err := os.Open(s.cfg.Path + "-wal")
	if errors.Is(err, os.ErrNotExist) {
		if err := syncFile(s.cfg.Path); err != nil { // checkpointed and removed: the main file holds it all
			return err
		}
		s.event("sync sqlite")
		return nil
	}
	if err != nil {
		return err
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		return err
	}
	if err := syncFile(s.cfg.Path); err != nil {
		return err
	}
	s.event("sync sqlite")
	return nil
}

func syncFile(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}
