package store

import (
	"database/sql"
	"errors"
	"fmt"

	"github.com/vmihailenco/msgpack/v5"
)

// TruncateAfter removes every log entry after lsn, and undoes what each
// one did (a message, a channel, a login and what it did to the accounts,
// a logout, a request key), durably. It is
// how a replica drops entries that were never committed — left by a
// coordinator that died before replicating them — while keeping the
// entries before them, which may be committed ones that a majority needs
// (package replication, Truncater).
//
// It stops the store's goroutines, edits SQLite in one transaction (every
// entry is in its log table) and starts them again; calls made meanwhile
// wait.
func (s *Store) TruncateAfter(lsn uint64) error {
	s.admin.Lock()
	defer s.admin.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed.Load() {
		return ErrClosed
	}
	if last, _ := s.e.last(); lsn >= last {
		return nil
	}
	cfg := s.e.cfg
	if err := s.e.Close(); err != nil && !errors.Is(err, ErrClosed) {
		return s.reopenAfter(cfg, fmt.Errorf("store: truncate: %w", err))
	}
	if firsts, err := segments(cfg.Path + "-log"); err != nil || len(firsts) > 0 {
		// Close keeps the change log only when SQLite may lack some of
		// it (the engine had failed): an engine opened and closed again
		// applies it.
		if err := applyLog(cfg); err != nil {
			return s.reopenAfter(cfg, fmt.Errorf("store: truncate: %w", err))
		}
	}
	err := undoAfter(cfg.Path, lsn)
	return s.reopenAfter(cfg, err)
}

// applyLog puts into SQLite what the change log of the store holds beyond
// it, and deletes the log.
func applyLog(cfg Config) error {
	e, err := openEngine(cfg, openOptions{})
	if err != nil {
		return err
	}
	if err := e.Close(); err != nil {
		return err
	}
	if firsts, err := segments(cfg.Path + "-log"); err != nil || len(firsts) > 0 {
		return errors.New("the change log is not all in SQLite")
	}
	return nil
}

// undoAfter removes, in one durable transaction, the log entries after
// lsn and what each of them added to the tables.
func undoAfter(path string, lsn uint64) error {
	db, err := sql.Open("sqlite", dsn(path, false))
	if err != nil {
		return err
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	if _, err := db.Exec("PRAGMA synchronous = FULL"); err != nil {
		return err
	}
	tx, err := db.Begin()
	if err != nil {
		return err
	}
	defer tx.Rollback()
	rows, err := tx.Query("SELECT lsn, entry FROM log WHERE lsn > ? ORDER BY lsn DESC", int64(lsn))
	if err != nil {
		return err
	}
	var undo []entry
	for rows.Next() {
		var at int64
		var data []byte
		if err := rows.Scan(&at, &data); err != nil {
			rows.Close()
			return err
		}
		var e entry
		if err := msgpack.Unmarshal(data, &e); err != nil {
			rows.Close()
			return fmt.Errorf("store: truncate: entry %d: %w", at, err)
		}
		undo = append(undo, e)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	for _, e := range undo { // newest first
		if err := undoEntry(tx, e); err != nil {
			return fmt.Errorf("store: truncate: entry %d: %w", e.LSN, err)
		}
	}
	if _, err := tx.Exec("DELETE FROM log WHERE lsn > ?", int64(lsn)); err != nil {
		return err
	}
	if _, err := tx.Exec("INSERT INTO meta (key, value) VALUES ('applied_lsn', ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value", int64(lsn)); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return err
	}
	if _, err := db.Exec("PRAGMA wal_checkpoint(FULL)"); err != nil {
		return err
	}
	return syncFile(path)
}

// undoEntry removes what one entry added.
func undoEntry(tx *sql.Tx, e entry) error {
	var err error
	switch e.Kind {
	case entryPost, entryDirect:
		_, err = tx.Exec("DELETE FROM messages WHERE id = ?", e.ID)
	case entryChannel:
		_, err = tx.Exec("DELETE FROM channels WHERE name = ?", e.Name)
	case entryLogin:
		if _, err = tx.Exec("DELETE FROM logins WHERE id = (SELECT max(id) FROM logins WHERE user = ? AND ts_ms = ?)", e.User, e.TS); err == nil {
			_, err = tx.Exec("DELETE FROM users WHERE name = ? AND NOT EXISTS (SELECT 1 FROM logins WHERE user = ?)", e.User, e.User)
		}
		if err == nil && e.Token != "" {
			_, err = tx.Exec("DELETE FROM tokens WHERE token_sha256 = ?", e.Token)
		}
		switch {
		case err != nil:
		case e.Claim:
			_, err = tx.Exec("DELETE FROM accounts WHERE name = ?", e.User)
		case e.PubKey != "":
			_, err = tx.Exec("UPDATE accounts SET public_key = ? WHERE name = ?", e.PrevKey, e.User)
		}
	case entryLogout:
		_, err = tx.Exec("INSERT OR REPLACE INTO tokens (token_sha256, user, expires_ms) VALUES (?, ?, ?)", e.Token, e.User, e.Expires)
	}
	if err == nil && e.HasKey {
		_, err = tx.Exec("DELETE FROM requests WHERE request_key = ?", e.Key)
	}
	return err
}
