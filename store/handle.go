package store

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
)

// Store is the durable store of one chat server. It is safe for
// concurrent use. It is a handle on the engine that does the work
// (store.go, writer.go, indexer.go), so that Reset can replace a whole
// store while the server keeps running.
type Store struct {
	mu     sync.RWMutex // held for reading by every call, for writing by Reset
	e      *engine
	closed atomic.Bool
}

// Open opens (or creates) the store at cfg.Path, applies to SQLite what the
// change log holds beyond it, loads the users and channels, and starts the
// writer, syncer and indexer goroutines.
func Open(cfg Config) (*Store, error) {
	e, err := openEngine(cfg)
	if err != nil {
		return nil, err
	}
	return &Store{e: e}, nil
}

// engine returns the current engine under the read lock; release it with
// the returned function.
func (s *Store) engine() (*engine, func()) {
	s.mu.RLock()
	return s.e, s.mu.RUnlock
}

// Close stops the writer after every change already queued is durable and
// indexed, deletes the log (SQLite holds all of it) and closes the
// database. Apply called after Close returns ErrClosed.
func (s *Store) Close() error {
	e, done := s.engine()
	defer done()
	if s.closed.Swap(true) {
		return ErrClosed
	}
	return e.Close()
}

// Reset replaces everything the store holds with an empty store, keeping
// the old files once under the name Path + ".diverged" (replacing an older
// copy). Replication calls it when this server's log has diverged from the
// coordinator's (it holds entries that were never committed), before it
// copies the coordinator's log from the start.
func (s *Store) Reset() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed.Load() {
		return ErrClosed
	}
	cfg := s.e.cfg
	if err := s.e.Close(); err != nil && !errors.Is(err, ErrClosed) {
		return fmt.Errorf("store: reset: %w", err)
	}
	old := cfg.Path + ".diverged"
	os.RemoveAll(old)
	if err := os.MkdirAll(old, 0o755); err != nil {
		return fmt.Errorf("store: reset: %w", err)
	}
	for _, suffix := range []string{"", "-wal", "-shm", "-log"} {
		if err := os.Rename(cfg.Path+suffix, old+"/"+baseName(cfg.Path)+suffix); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("store: reset: %w", err)
		}
	}
	e, err := openEngine(cfg)
	if err != nil {
		s.closed.Store(true)
		return fmt.Errorf("store: reset: %w", err)
	}
	e.epoch.Store(s.e.epoch.Load()) // SetEpoch holds "from now on", across the replacement
	s.e = e
	return nil
}

// baseName is the last element of path.
func baseName(path string) string {
	for i := len(path) - 1; i >= 0; i-- {
		if path[i] == '/' {
			return path[i+1:]
		}
	}
	return path
}

// Apply queues ch, waits until it is committed to disk, and returns the message ID (0 for non-messages).
//
// If a state check fails, Apply returns ErrChannelExists, ErrNoChannel or
// ErrNoUser and nothing but the request key is stored. If ctx ends while the
// change is still queued, Apply returns ctx.Err() and the change is not
// applied; once the writer has taken it, Apply waits for the commit.
func (s *Store) Apply(ctx context.Context, ch Change) (int64, error) {
	id, _, err := s.Submit(ctx, ch)
	return id, err
}

// Submit is Apply that also returns the LSN of the log entry the change
// became (0 when none was written: a failed check without a request key).
// Replication waits for that LSN to reach the other servers.
func (s *Store) Submit(ctx context.Context, ch Change) (id int64, lsn uint64, err error) {
	e, done := s.engine()
	defer done()
	return e.submit(ctx, ch)
}

// Append appends entries another server's store ordered (replication).
// They must follow this log's last entry without a gap (ErrGap otherwise).
// It returns the LSN of the last entry once all of them are durable.
// The store keeps the entries' Data: the caller must not modify it after.
func (s *Store) Append(ctx context.Context, entries []Entry) (uint64, error) {
	e, done := s.engine()
	defer done()
	return e.appendReplicated(ctx, entries)
}

// EntriesAfter returns up to max durable entries after lsn, oldest first,
// and no more than about maxBytes of them (at least one when there is one,
// and none when max <= 0). Their Data may be shared with the store's
// memory: read it, never modify it.
func (s *Store) EntriesAfter(ctx context.Context, lsn uint64, max, maxBytes int) ([]Entry, error) {
	e, done := s.engine()
	defer done()
	return e.entriesAfter(ctx, lsn, max, maxBytes)
}

// EpochAt returns the epoch of the durable entry at lsn (0 for lsn 0);
// ok is false when the log has no such entry.
func (s *Store) EpochAt(ctx context.Context, lsn uint64) (epoch uint64, ok bool, err error) {
	e, done := s.engine()
	defer done()
	return e.epochAt(ctx, lsn)
}

// Last returns the LSN and epoch of the last durable entry (0, 0 when empty).
func (s *Store) Last() (lsn, epoch uint64) {
	e, done := s.engine()
	defer done()
	return e.last()
}

// Durable returns the last durable LSN and a channel that is closed when
// it grows (or the store is reset or closed): wait on it, then ask again.
func (s *Store) Durable() (uint64, <-chan struct{}) {
	e, done := s.engine()
	defer done()
	return e.durable()
}

// WaitDurable blocks until the entry at lsn is durable here, or ctx ends.
func (s *Store) WaitDurable(ctx context.Context, lsn uint64) error {
	for {
		got, changed := s.Durable()
		if got >= lsn {
			return nil
		}
		if s.isClosed() {
			return ErrClosed
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// MaxClock returns the largest Lamport clock of a stored message, so that
// a server's clock never goes back after a restart or a change of
// coordinator: its new messages get larger clocks than every stored one.
func (s *Store) MaxClock() uint64 {
	e, done := s.engine()
	defer done()
	return e.maxClock.Load()
}

// SetEpoch sets the epoch stamped on the entries this store orders from
// now on (the coordinator's epoch, see package replication).
func (s *Store) SetEpoch(epoch uint64) {
	e, done := s.engine()
	defer done()
	e.epoch.Store(epoch)
}

func (s *Store) isClosed() bool { return s.closed.Load() }

// Replay returns the reply stored under a request key, if the key was
// applied within the last Config.RequestKeyTTL.
func (s *Store) Replay(key string) (reply []byte, ok bool) {
	e, done := s.engine()
	defer done()
	return e.Replay(key)
}

// HasUser reports whether name has ever logged in.
func (s *Store) HasUser(name string) bool {
	e, done := s.engine()
	defer done()
	return e.HasUser(name)
}

// HasChannel reports whether the channel exists.
func (s *Store) HasChannel(name string) bool {
	e, done := s.engine()
	defer done()
	return e.HasChannel(name)
}

// Users returns the names of all users, sorted.
func (s *Store) Users() []string {
	e, done := s.engine()
	defer done()
	return e.Users()
}

// Channels returns the names of all channels, sorted.
func (s *Store) Channels() []string {
	e, done := s.engine()
	defer done()
	return e.Channels()
}

// Stats returns the writer's counters.
func (s *Store) Stats() Stats {
	e, done := s.engine()
	defer done()
	return e.Stats()
}

// History returns matching messages oldest first (the newest Limit of them before Before).
func (s *Store) History(ctx context.Context, q HistoryQuery) ([]Message, error) {
	e, done := s.engine()
	defer done()
	return e.History(ctx, q)
}

// Logins returns every login of user, oldest first.
func (s *Store) Logins(ctx context.Context, user string) ([]Login, error) {
	e, done := s.engine()
	defer done()
	return e.Logins(ctx, user)
}

// Count returns the number of stored messages.
func (s *Store) Count(ctx context.Context) (int64, error) {
	e, done := s.engine()
	defer done()
	return e.Count(ctx)
}
