package store

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// Store is the durable store of one chat server. It is safe for
// concurrent use. It is a handle on the engine that does the work
// (store.go, writer.go, indexer.go), so that Reset can replace a whole
// store while the server keeps running, and so that the store can reopen
// itself after a failed write (repair).
type Store struct {
	admin  sync.Mutex   // serialises Close, Reset, TruncateAfter and repair
	mu     sync.RWMutex // held for reading by every call, for writing while e is replaced
	e      *engine
	closed atomic.Bool
	quit   chan struct{} // closed by Close: repair gives up
	// swapped is closed (and replaced) whenever e is replaced, and at
	// Close: Durable hands it out while the engine is out of service.
	swapped   chan struct{}
	retry     time.Duration         // Config.RetryInterval
	repairing atomic.Bool           // a repair goroutine runs
	repairErr atomic.Pointer[error] // why the last reopen of repair failed
}

// Open opens (or creates) the store at cfg.Path, applies to SQLite what the
// change log holds beyond it, loads the users and channels, and starts the
// writer, syncer and indexer goroutines. Damaged files are refused with a
// *CorruptError (see damage.go).
func Open(cfg Config) (*Store, error) {
	return open(cfg, openOptions{})
}

// open is Open with options for the first engine.
func open(cfg Config, opts openOptions) (*Store, error) {
	s := &Store{quit: make(chan struct{}), swapped: make(chan struct{}), retry: cfg.withDefaults().RetryInterval}
	opts.onFail = s.startRepair
	s.admin.Lock() // a repair waits for s.e
	defer s.admin.Unlock()
	e, err := openEngine(cfg, opts)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	s.e = e
	s.mu.Unlock()
	return s, nil
}

// options are how the Store opens its engines.
func (s *Store) options() openOptions { return openOptions{onFail: s.startRepair} }

// engine returns the current engine under the read lock; release it with
// the returned function.
func (s *Store) engine() (*engine, func()) {
	s.mu.RLock()
	return s.e, s.mu.RUnlock
}

// install makes e the engine, carrying the epoch over (SetEpoch holds
// "from now on", across the replacement). s.mu must be held for writing.
func (s *Store) install(e *engine) {
	e.epoch.Store(s.e.epoch.Load())
	s.e = e
	close(s.swapped)
	s.swapped = make(chan struct{})
}

// startRepair starts the repair goroutine unless it runs (the engine's
// onFail: an engine has failed).
func (s *Store) startRepair() {
	if !s.closed.Load() && s.repairing.CompareAndSwap(false, true) {
		go s.repair()
	}
}

// repair reopens a failed engine: every Config.RetryInterval it closes
// what is open and opens the engine again, which reads the log back (so
// that only what is truly on disk counts), until that works. Meanwhile
// writes fail with ErrUnavailable and reads go on from what SQLite holds.
// A damaged file (ErrCorrupt) ends the tries: only the caller can mend it.
func (s *Store) repair() {
	for {
		t := time.NewTimer(s.retry)
		select {
		case <-s.quit:
			t.Stop()
			s.repairing.Store(false)
			return
		case <-t.C:
		}
		switch s.reopen() {
		case tryAgain:
			continue
		case giveUp:
			s.repairing.Store(false)
			return
		}
		s.repairing.Store(false)
		// The new engine may have failed while this goroutine still ran,
		// and its startRepair found it running: look again.
		s.mu.RLock()
		failed := s.e.failure() != nil
		s.mu.RUnlock()
		if !failed || !s.repairing.CompareAndSwap(false, true) {
			return
		}
	}
}

// The outcomes of reopen.
const (
	reopened = iota // or nothing to do
	tryAgain        // later
	giveUp          // the files are damaged: the caller must mend them
)

// reopen replaces the current engine, if it has failed, by a new one. The
// failed engine serves reads until the new one is there.
func (s *Store) reopen() int {
	s.admin.Lock()
	defer s.admin.Unlock()
	old := s.e // only admin holders replace it
	if s.closed.Load() || old.failure() == nil {
		return reopened // closed, or replaced meanwhile (Reset)
	}
	old.stopWriting()
	e, err := openEngine(old.cfg, s.options())
	var ce *CorruptError
	if errors.As(err, &ce) && ce.LSN > old.ackedLSN.Load() {
		// The log is damaged after its last acknowledged entry: in what
		// was written before the failure, never made durable and never
		// acknowledged (the pages of a failed fsync may be lost). Drop it.
		opts := s.options()
		opts.dropFrom = ce.LSN
		e, err = openEngine(old.cfg, opts)
	}
	if err != nil {
		s.repairErr.Store(&err)
		if errors.Is(err, ErrCorrupt) {
			return giveUp
		}
		return tryAgain
	}
	s.repairErr.Store(nil)
	s.mu.Lock()
	s.install(e)
	s.mu.Unlock()
	old.Close()
	return reopened
}

// writeErr adds to a write's error why the store could not reopen itself
// yet, if it tried (a *CorruptError among others).
func (s *Store) writeErr(err error) error {
	if errors.Is(err, ErrUnavailable) {
		if p := s.repairErr.Load(); p != nil && errors.Is(*p, ErrCorrupt) {
			return fmt.Errorf("%w; reopening found damaged files, and the store tries no more: %w", err, *p)
		} else if p != nil {
			return fmt.Errorf("%w; reopening failed: %w", err, *p)
		}
	}
	return err
}

// Close stops the writer after every change already queued is durable and
// indexed, deletes the log (SQLite holds all of it) and closes the
// database. Apply called after Close returns ErrClosed.
func (s *Store) Close() error {
	if s.closed.Swap(true) {
		return ErrClosed
	}
	close(s.quit)
	s.admin.Lock()
	defer s.admin.Unlock()
	e, done := s.engine()
	defer done()
	err := e.Close()
	close(s.swapped)
	if errors.Is(err, ErrClosed) {
		return nil // closed already when a reopen failed
	}
	return err
}

// Reset replaces everything the store holds with an empty store, keeping
// the old files once under the name Path + ".diverged" (replacing an older
// copy). Replication calls it when this server's log has diverged from the
// coordinator's (it holds entries that were never committed), before it
// copies the coordinator's log from the start.
func (s *Store) Reset() error {
	s.admin.Lock()
	defer s.admin.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed.Load() {
		return ErrClosed
	}
	cfg := s.e.cfg
	if err := s.e.Close(); err != nil && !errors.Is(err, ErrClosed) {
		return s.reopenAfter(cfg, fmt.Errorf("store: reset: %w", err))
	}
	if _, err := setAside(cfg.Path, ".diverged"); err != nil {
		return s.reopenAfter(cfg, fmt.Errorf("store: reset: %w", err))
	}
	return s.reopenAfter(cfg, nil)
}

// reopenAfter opens the engine again after Reset or TruncateAfter closed
// it, and returns err (or the failure to open). If the engine cannot be
// opened, the closed one stays, failed, until repair opens a new one.
// s.admin and s.mu must be held.
func (s *Store) reopenAfter(cfg Config, err error) error {
	e, oerr := openEngine(cfg, s.options())
	if oerr != nil {
		oerr = fmt.Errorf("store: reopen: %w", oerr)
		s.e.fail(oerr)  // writes fail with it (unless it had failed before)
		s.startRepair() // (it may have stopped at a damaged file)
		return errors.Join(err, oerr)
	}
	s.install(e)
	return err
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
	if s.isClosed() {
		return 0, 0, ErrClosed
	}
	e, done := s.engine()
	defer done()
	id, lsn, err = e.submit(ctx, ch)
	return id, lsn, s.writeErr(err)
}

// Append appends entries another server's store ordered (replication).
// They must follow this log's last entry without a gap (ErrGap otherwise).
// It returns the LSN of the last entry once all of them are durable.
// The store keeps the entries' Data: the caller must not modify it after.
func (s *Store) Append(ctx context.Context, entries []Entry) (uint64, error) {
	if s.isClosed() {
		return 0, ErrClosed
	}
	e, done := s.engine()
	defer done()
	lsn, err := e.appendReplicated(ctx, entries)
	return lsn, s.writeErr(err)
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
// it grows (or the store is reset, reopened or closed): wait on it, then
// ask again.
func (s *Store) Durable() (uint64, <-chan struct{}) {
	e, done := s.engine()
	defer done()
	lsn, changed := e.durable()
	if e.failure() != nil {
		// It grows no more (or its channel is closed for good, once
		// Close has been called): wait for the engine that replaces it.
		return lsn, s.swapped
	}
	return lsn, changed
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

// Account returns the account of a claimed user, from what is durable.
func (s *Store) Account(user string) (Account, bool) {
	e, done := s.engine()
	defer done()
	return e.Account(user)
}

// CheckToken reports whether token (as the client sent it) is a live
// token of user at time at, from what is durable: nil, ErrBadToken or
// ErrTokenExpired.
func (s *Store) CheckToken(user, token string, at time.Time) error {
	e, done := s.engine()
	defer done()
	return e.CheckToken(user, token, at)
}
