// Package store is the durable store of one chat server.
//
// A change is durable once it is in the change log (changelog.go): an
// append-only file per segment, written in batches by one writer goroutine
// and fsynced by a syncer goroutine before any caller is answered (group
// commit: one fsync acknowledges every change that arrived while the
// previous one ran). An indexer goroutine then copies the log into SQLite
// in large transactions; SQLite is where reads come from, and readers wait
// until it holds everything acknowledged, so a client reads its own writes.
// Opening the store applies to SQLite whatever the log holds beyond it,
// so nothing acknowledged is lost by kill -9.
//
// Everything queryable lives in one SQLite file (modernc.org/sqlite, pure
// Go, WAL mode): users and their logins, channels, channel posts, direct
// messages, and the replies of requests that carried a request id. The
// file can be inspected with the sqlite3 tool; times are Unix milliseconds
// (see schema.go).
//
// The checks that depend on state (does the channel exist?) are made by
// the writer against its own in-memory view, so concurrent changes are
// serialised exactly. The sets of users and channels are kept in memory,
// so HasUser, HasChannel, Users and Channels never touch SQL.
//
// Disk faults. After a failed write or fsync (a full disk), the store
// accepts no writes (ErrUnavailable) and reopens itself every
// Config.RetryInterval, reading the log back so that only what is truly on
// disk counts, until that works; reads go on meanwhile. Open refuses
// damaged files with a *CorruptError (ErrCorrupt): a change log damaged in
// its middle (a torn last entry, as a crash leaves it, is accepted) or a
// SQLite file that fails quick_check; OpenTruncated and OpenRebuilt are
// the ways out, replication copying what they could not keep (damage.go).
// Open also says so when the data directory is not writable.
//
// Why not write to SQLite directly: measured on this project's 2-core
// machine, SQLite's per-transaction work in the one writer goroutine capped
// durable publishes at about 40% of a bare echo server; the log brings the
// request path down to one buffered write and a shared fsync.
package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"maps"
	"math"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	_ "modernc.org/sqlite" // registers the "sqlite" database/sql driver
)

// Errors returned by the store.
var (
	ErrChannelExists = errors.New("store: channel already exists")
	ErrNoChannel     = errors.New("store: no such channel")
	ErrNoUser        = errors.New("store: no such user")
	ErrClosed        = errors.New("store: closed")
	// ErrDuplicate is returned by Apply when a change's RequestKey has
	// already been applied; the change is not applied again and
	// Replay(key) returns the stored reply.
	ErrDuplicate = errors.New("store: request already applied")
	// ErrGap is returned by Append when the entries do not follow the
	// log's last entry.
	ErrGap = errors.New("store: entries do not follow the log")
	// ErrCorrupt is wrapped by the errors that report damaged files: a
	// *CorruptError, from Open (see damage.go) or from a read.
	ErrCorrupt = errors.New("store: damaged files")
	// ErrUnavailable is wrapped by the errors of writes (and of the reads
	// that would be stale) after a write to the disk failed: the store
	// then reopens itself, every Config.RetryInterval, until that works
	// (the disk has room again). Nothing the caller was told is durable is
	// lost; a change that got this error may or may not have been applied
	// (its request key tells).
	ErrUnavailable = errors.New("store: unavailable")
)

// Config configures a Store.
type Config struct {
	Path          string        // SQLite file path; required. The log is the directory Path + "-log".
	MaxBatch      int           // max changes per log write (default 512)
	RequestKeyTTL time.Duration // how long request keys are remembered (default 24h)
	SegmentSize   int64         // log segment size that starts a new segment (default 16 MiB)
	IndexBatch    int           // max entries per SQLite transaction of the indexer (default 4096)
	IndexLinger   time.Duration // how long the indexer gathers entries for one transaction, unless a read waits for them (default 50ms)
	// SyncInterval is the least time between the starts of two fsyncs of
	// the log (default 200µs; negative: none). Waiting a little lets more
	// changes share one fsync; on this project's machine it raised durable
	// throughput by a third for under 0.2 ms of latency.
	SyncInterval time.Duration
	KeyGrace     time.Duration // how long an indexed request key stays in memory (default 1 min)
	// TailEntries is how many of the newest durable entries are kept in
	// memory for replication (default 65536); older ones are read from SQLite.
	TailEntries int
	// RetryInterval is how long after a failed write or fsync the store
	// tries to reopen itself, and again after each failed try (default 1s).
	RetryInterval time.Duration
	// NoIntegrityCheck skips SQLite's quick_check at Open (about 2 ms per
	// MB of database, see damage.go).
	NoIntegrityCheck bool

	hooks *testHooks // tests only
}

// testHooks let tests watch the order of the store's disk operations.
type testHooks struct {
	event    func(what string) // "index" (a transaction committed), "sync sqlite", "remove SEGMENT"
	indexErr func() error      // called before each SQLite transaction of the indexer; an error fails it
	writeErr func() error      // called before each write to the log; an error fails it
	syncErr  func() error      // called after each fsync of the log; an error fails it
}

// hookErr returns the error of a test hook (nil without one).
func (s *engine) hookErr(pick func(*testHooks) func() error) error {
	if h := s.cfg.hooks; h != nil {
		if f := pick(h); f != nil {
			return f()
		}
	}
	return nil
}

// event reports a disk operation to the test hooks, if any.
func (s *engine) event(what string) {
	if h := s.cfg.hooks; h != nil && h.event != nil {
		h.event(what)
	}
}

// Default values of Config fields left at zero.
const (
	DefaultMaxBatch      = 512
	DefaultRequestKeyTTL = 24 * time.Hour
	DefaultSegmentSize   = 16 << 20
	DefaultIndexBatch    = 4096
	DefaultIndexLinger   = 50 * time.Millisecond // measured: +10% replicated throughput over 5 ms
	DefaultSyncInterval  = 200 * time.Microsecond
	DefaultKeyGrace      = time.Minute
	DefaultTailEntries   = 1 << 16
	DefaultRetryInterval = time.Second
)

// DefaultConfig returns the default configuration for the file at path.
func DefaultConfig(path string) Config {
	return Config{Path: path, MaxBatch: DefaultMaxBatch, RequestKeyTTL: DefaultRequestKeyTTL,
		SegmentSize: DefaultSegmentSize, IndexBatch: DefaultIndexBatch, IndexLinger: DefaultIndexLinger, KeyGrace: DefaultKeyGrace, SyncInterval: DefaultSyncInterval,
		RetryInterval: DefaultRetryInterval}
}

// Validate reports whether c is usable. Zero MaxBatch and RequestKeyTTL are
// valid and mean the defaults.
func (c Config) Validate() error {
	switch {
	case c.Path == "":
		return errors.New("store: config: Path is required")
	case c.MaxBatch < 0:
		return errors.New("store: config: MaxBatch must not be negative")
	case c.RequestKeyTTL < 0:
		return errors.New("store: config: RequestKeyTTL must not be negative")
	case c.SegmentSize < 0 || c.IndexBatch < 0 || c.IndexLinger < 0 || c.KeyGrace < 0 || c.RetryInterval < 0:
		return errors.New("store: config: SegmentSize, IndexBatch, IndexLinger, KeyGrace and RetryInterval must not be negative")
	}
	return nil
}

// withDefaults returns c with zero fields set to their defaults.
func (c Config) withDefaults() Config {
	if c.MaxBatch == 0 {
		c.MaxBatch = DefaultMaxBatch
	}
	if c.RequestKeyTTL == 0 {
		c.RequestKeyTTL = DefaultRequestKeyTTL
	}
	if c.SegmentSize == 0 {
		c.SegmentSize = DefaultSegmentSize
	}
	if c.IndexBatch == 0 {
		c.IndexBatch = DefaultIndexBatch
	}
	if c.KeyGrace == 0 {
		c.KeyGrace = DefaultKeyGrace
	}
	if c.IndexLinger == 0 {
		c.IndexLinger = DefaultIndexLinger
	}
	if c.SyncInterval == 0 {
		c.SyncInterval = DefaultSyncInterval
	}
	if c.TailEntries <= 0 {
		c.TailEntries = DefaultTailEntries
	}
	if c.RetryInterval == 0 {
		c.RetryInterval = DefaultRetryInterval
	}
	return c
}

// Kind tells a channel post from a direct message.
type Kind string

// The kinds of message.
const (
	Post   Kind = "post"
	Direct Kind = "direct"
)

// Message is one stored channel post or direct message.
type Message struct {
	ID        int64 // assigned by the store, increasing
	Kind      Kind
	Channel   string    // posts only
	From      string    // author
	To        string    // direct messages only
	Text      string    // the message text
	Timestamp time.Time // sender's/server's time, stored with millisecond precision
	Clock     uint64    // Lamport clock stamped by the server
}

// Login is one login of a user. The other fields are for accounts
// (accounts.go) and all optional.
type Login struct {
	User      string
	Timestamp time.Time

	// Claim makes this login claim User with PasswordHash; it fails with
	// ErrClaimed when User is claimed already.
	Claim        bool
	PasswordHash string
	// PublicKey, if set, is stored on User's account (which must exist:
	// ErrNotClaimed otherwise).
	PublicKey string
	// Token, if set, is a token issued by this login to User (who must be
	// claimed, or claimed by this login: ErrNotClaimed otherwise).
	Token *Token
}

// Channel is a channel and who created it when.
type Channel struct {
	Name      string
	Creator   string
	Timestamp time.Time
}

// Change is one durable write: exactly one of Login, Channel, Message,
// Logout, Noop is set.
//
// A zero Timestamp in the set value means "now".
type Change struct {
	Login   *Login
	Channel *Channel
	Message *Message // ID is ignored and assigned
	Logout  *Logout  // revokes the token AuthToken
	// AuthToken is the TokenHash of the token the change's author
	// presented. A message by a claimed user, and a logout, fail with
	// ErrBadToken or ErrTokenExpired unless it is a live token of theirs.
	AuthToken string
	// Noop writes an entry that changes nothing: a new coordinator's first
	// entry in its epoch (see package replication).
	Noop bool

	// RequestKey, if not empty, is stored with the change in the same
	// transaction, together with the reply to send; Replay returns that
	// reply, and a second Apply with the same key returns ErrDuplicate.
	// It is stored even when the change fails a check, so a retry gets the
	// same answer. The key should name the client as well as its request id.
	RequestKey string
	// Reply is stored under RequestKey as is, whatever the outcome.
	Reply []byte
	// ReplyFunc, if set, is used instead of Reply when the answer depends on
	// the outcome: the writer calls it with the message ID (0 for
	// non-messages) and the change's error (nil, or ErrChannelExists,
	// ErrNoChannel, ErrNoUser, or an account check's: ErrClaimed,
	// ErrNotClaimed, ErrBadToken, ErrTokenExpired) and stores what it
	// returns. It must be quick
	// and must not call the Store.
	ReplyFunc func(id int64, err error) []byte
}

// validate checks the shape of ch; state-dependent checks are the writer's.
func (ch Change) validate() error {
	n := 0
	for _, set := range []bool{ch.Login != nil, ch.Channel != nil, ch.Message != nil, ch.Logout != nil, ch.Noop} {
		if set {
			n++
		}
	}
	if n != 1 {
		return errors.New("store: a change must set exactly one of Login, Channel, Message, Logout, Noop")
	}
	switch {
	case ch.Login != nil && ch.Login.User == "":
		return errors.New("store: login without a user")
	case ch.Login != nil && ch.Login.Claim && (ch.Login.PasswordHash == "" || ch.Login.Token == nil):
		return errors.New("store: a claim needs a password hash and a token")
	case ch.Login != nil && ch.Login.Token != nil && (ch.Login.Token.Hash == "" || ch.Login.Token.User != ch.Login.User):
		return errors.New("store: a login's token needs a hash and must be its user's")
	case ch.Logout != nil && (ch.Logout.User == "" || ch.AuthToken == ""):
		return errors.New("store: logout without a user or a token")
	case ch.Channel != nil && ch.Channel.Name == "":
		return errors.New("store: channel without a name")
	case ch.Message != nil:
		m := ch.Message
		switch {
		case m.From == "":
			return errors.New("store: message without an author")
		case m.Kind == Post && m.Channel == "":
			return errors.New("store: post without a channel")
		case m.Kind == Direct && m.To == "":
			return errors.New("store: direct message without a recipient")
		case m.Kind != Post && m.Kind != Direct:
			return fmt.Errorf("store: unknown message kind %q", m.Kind)
		}
	}
	return nil
}

// copyWithTime returns ch with its value copied (so the caller may reuse
// it) and a zero Timestamp replaced by now.
func (ch Change) copyWithTime(now time.Time) Change {
	switch {
	case ch.Login != nil:
		l := *ch.Login
		if l.Timestamp.IsZero() {
			l.Timestamp = now
		}
		ch.Login = &l
	case ch.Logout != nil:
		l := *ch.Logout
		if l.Timestamp.IsZero() {
			l.Timestamp = now
		}
		ch.Logout = &l
	case ch.Channel != nil:
		c := *ch.Channel
		if c.Timestamp.IsZero() {
			c.Timestamp = now
		}
		ch.Channel = &c
	case ch.Message != nil:
		m := *ch.Message
		m.ID = 0
		if m.Timestamp.IsZero() {
			m.Timestamp = now
		}
		ch.Message = &m
	}
	return ch
}

// Stats counts the work of the writer since Open.
type Stats struct {
	Batches int64 // groups of changes the writer appended in one write
	Commits int64 // fsyncs of the change log: each made one or more batches durable
	Changes int64 // changes acknowledged (including failed checks)
}

// engine is a Store's working part, from one Open to its Close (handle.go).
type engine struct {
	cfg   Config
	opts  openOptions
	wdb   *sql.DB     // the indexer's connection to SQLite
	stmts *statements // the indexer's prepared statements
	rdb   *sql.DB     // the read-only pool

	stop    chan struct{}  // closed by Close: the writer drains its queue and returns
	queue   chan *request  // changes waiting for the writer
	toSync  chan syncBatch // appended batches waiting for the syncer
	toIndex chan []*entry  // durable entries waiting for the indexer
	indexed chan struct{}  // closed when the indexer (the last goroutine) has returned

	// closeMu makes Close and the enqueueing in Apply exclusive, so that
	// once Close has set closed no change enters the queue.
	closeMu     sync.RWMutex
	closed      bool // no more changes: the writer, syncer and indexer stop (stopWriting)
	readsClosed bool // no more reads: the read pool is closed (Close)

	// The writer's own state: only the writer goroutine touches it.
	logDir      string
	seg         *os.File // the segment being written
	segSize     int64
	buf         []byte
	lastLSN     uint64 // LSN of the last entry checked
	lastWritten uint64 // LSN of the last entry written to a segment
	nextID      int64  // id of the last message appended
	wUsers      map[string]bool
	wChannels   map[string]bool
	wAccounts   *accounts

	segMu     sync.Mutex
	segFirsts []uint64 // first LSN of each segment not yet deleted

	keysMu   sync.Mutex
	keys     map[string]*pendingKey
	keyOrder []keyAge

	broken atomic.Pointer[error] // set when a write or fsync failed

	// mu guards users and channels: what is durable. Only the syncer changes them.
	mu       sync.RWMutex
	users    map[string]bool
	channels map[string]bool
	accounts *accounts

	ackedLSN   atomic.Uint64 // last LSN acknowledged to a caller
	indexMu    sync.Mutex
	indexCond  *sync.Cond
	indexedLSN uint64 // last LSN in SQLite
	indexDone  bool   // the indexer has stopped: nobody waits for it

	messages atomic.Int64  // number of stored messages
	maxClock atomic.Uint64 // the largest Lamport clock of a durable message
	batches  atomic.Int64
	commits  atomic.Int64
	changes  atomic.Int64

	lastPrune time.Time // when the indexer last pruned request keys

	// Replication (replica.go).
	epoch        atomic.Uint64 // epoch stamped on new entries
	durableEpoch atomic.Uint64 // epoch of the entry at ackedLSN
	tailMu       sync.Mutex
	tail         []*entry // the newest durable entries, in LSN order
	notifyMu     sync.Mutex
	notify       chan struct{} // closed (and replaced) whenever ackedLSN grows
	readerWaits  chan struct{} // a reader waits for the indexer (it stops lingering)

	testHookBatch atomic.Pointer[func()] // called by the writer before each batch (tests only)
}

// openOptions are how the Store opens an engine.
type openOptions struct {
	onFail   func() // called once when a write or fsync fails (not from a lock of the engine)
	dropFrom uint64 // when not 0, the log entries from this LSN on are dropped (OpenTruncated)
}

// openEngine opens (or creates) the store at cfg.Path, applies to SQLite
// what the change log holds beyond it, loads the users and channels, and
// starts the writer, syncer and indexer goroutines.
func openEngine(cfg Config, opts openOptions) (*engine, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := checkWritable(cfg.Path); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	s := &engine{
		cfg:         cfg,
		opts:        opts,
		stop:        make(chan struct{}),
		queue:       make(chan *request, cfg.MaxBatch),
		toSync:      make(chan syncBatch, 4),
		toIndex:     make(chan []*entry, 256),
		indexed:     make(chan struct{}),
		logDir:      cfg.Path + "-log",
		users:       make(map[string]bool),
		channels:    make(map[string]bool),
		accounts:    newAccounts(),
		keys:        make(map[string]*pendingKey),
		notify:      make(chan struct{}),
		readerWaits: make(chan struct{}, 1),
	}
	s.indexCond = sync.NewCond(&s.indexMu)
	if err := s.openSQLite(); err != nil {
		return nil, s.openErr("open", err)
	}
	if err := s.recover(); err != nil {
		s.wdb.Close()
		s.rdb.Close()
		return nil, s.openErr("recover", err)
	}
	go s.run()
	go s.syncer()
	go s.indexer()
	return s, nil
}

// openErr is the error of Open for err, met while doing what.
func (s *engine) openErr(what string, err error) error {
	var ce *CorruptError
	if err = s.sqlErr(err); errors.As(err, &ce) {
		return err // it names the file
	}
	return fmt.Errorf("store: %s %s: %w", what, s.cfg.Path, err)
}

// openSQLite opens the indexer's connection and the read pool, after
// checking the integrity of the file.
func (s *engine) openSQLite() error {
	wdb, err := sql.Open("sqlite", dsn(s.cfg.Path, false))
	if err != nil {
		return err
	}
	wdb.SetMaxOpenConns(1) // one writer
	if !s.cfg.NoIntegrityCheck {
		if err := quickCheck(wdb, s.cfg.Path); err != nil {
			wdb.Close()
			return err
		}
	}
	if _, err := wdb.Exec(schema); err != nil {
		wdb.Close()
		return err
	}
	if s.stmts, err = prepare(wdb); err != nil {
		wdb.Close()
		return err
	}
	// The read-only pool is opened after the writer has created the file
	// and switched it to WAL.
	rdb, err := sql.Open("sqlite", dsn(s.cfg.Path, true))
	if err != nil {
		wdb.Close()
		return err
	}
	rdb.SetMaxOpenConns(max(4, runtime.GOMAXPROCS(0)))
	s.wdb, s.rdb = wdb, rdb
	return nil
}

// recover applies the log entries SQLite lacks, deletes the log, loads the
// in-memory state and starts a fresh log segment. A log damaged where
// SQLite lacks its entries is a *CorruptError (see replayLog).
func (s *engine) recover() error {
	if err := os.MkdirAll(s.logDir, 0o755); err != nil {
		return err
	}
	var applied int64
	if err := s.wdb.QueryRow("SELECT coalesce((SELECT value FROM meta WHERE key = 'applied_lsn'), 0)").Scan(&applied); err != nil {
		return err
	}
	if drop := s.opts.dropFrom; drop > 0 && uint64(applied) >= drop {
		return fmt.Errorf("store: SQLite holds entry %d, which is to be dropped", drop)
	}
	firsts, err := segments(s.logDir)
	if err != nil {
		return err
	}
	var pending []*entry
	flush := func() error {
		if len(pending) == 0 {
			return nil
		}
		err := s.index(pending)
		pending = pending[:0]
		return err
	}
	s.lastLSN, err = replayLog(s.logDir, firsts, uint64(applied), s.opts.dropFrom, func(e *entry) error {
		if pending = append(pending, e); len(pending) >= s.cfg.IndexBatch {
			return flush()
		}
		return nil
	})
	if err != nil {
		return err
	}
	if err := flush(); err != nil {
		return err
	}
	if len(firsts) > 0 {
		// All of the log is in SQLite now, but SQLite's commits do not
		// fsync (see dsn): make them durable before the log goes.
		if err := s.syncSQLite(); err != nil {
			return err
		}
		if s.opts.dropFrom > 0 { // keep the dropped entries for a post-mortem
			if err := s.setLogAside(firsts); err != nil {
				return err
			}
		} else {
			for _, first := range firsts {
				s.event("remove " + segmentName(first))
				if err := os.Remove(filepath.Join(s.logDir, segmentName(first))); err != nil {
					return err
				}
			}
		}
	}
	if err := s.load(); err != nil {
		return err
	}
	s.indexedLSN = s.lastLSN
	s.ackedLSN.Store(s.lastLSN)
	var epoch int64
	if err := s.wdb.QueryRow("SELECT coalesce((SELECT epoch FROM log ORDER BY lsn DESC LIMIT 1), 0)").Scan(&epoch); err != nil {
		return err
	}
	s.durableEpoch.Store(uint64(epoch))
	s.wUsers, s.wChannels, s.wAccounts = maps.Clone(s.users), maps.Clone(s.channels), s.accounts.clone()
	s.lastWritten = s.lastLSN
	s.seg, err = createSegment(s.logDir, s.lastLSN+1, s.cfg.SegmentSize)
	if err != nil {
		return err
	}
	s.segFirsts = []uint64{s.lastLSN + 1}
	return nil
}

// setLogAside moves the log segments into Path + ".damaged", replacing an
// older copy.
func (s *engine) setLogAside(firsts []uint64) error {
	dir := filepath.Join(s.cfg.Path+".damaged", baseName(s.cfg.Path)+"-log")
	if err := os.RemoveAll(s.cfg.Path + ".damaged"); err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for _, first := range firsts {
		s.event("remove " + segmentName(first))
		if err := os.Rename(filepath.Join(s.logDir, segmentName(first)), filepath.Join(dir, segmentName(first))); err != nil {
			return err
		}
	}
	return syncDir(s.logDir)
}

// dsn returns the driver's data source name for the file at path.
func dsn(path string, readOnly bool) string {
	q := url.Values{}
	q.Add("_pragma", "busy_timeout(10000)")
	if readOnly {
		q.Set("mode", "ro")
	} else {
		q.Add("_pragma", "journal_mode(WAL)")
		// The indexer's commits do not fsync: the change log holds the
		// same entries, and SQLite's log is fsynced before any segment
		// of ours is deleted (syncSQLite).
		q.Add("_pragma", "synchronous(NORMAL)")
		q.Set("_txlock", "immediate")
	}
	u := url.URL{Scheme: "file", Path: path, RawQuery: q.Encode()}
	if path[0] != '/' {
		u.Opaque = url.PathEscape(path) // a relative path: "file:chat.db?..."
	}
	return u.String()
}

// load reads the users, the channels and the number of messages.
func (s *engine) load() error {
	for table, set := range map[string]map[string]bool{"users": s.users, "channels": s.channels} {
		rows, err := s.wdb.Query("SELECT name FROM " + table)
		if err != nil {
			return err
		}
		for rows.Next() {
			var name string
			if err := rows.Scan(&name); err != nil {
				rows.Close()
				return err
			}
			set[name] = true
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
	}
	var n, maxID, maxClock int64
	if err := s.wdb.QueryRow("SELECT count(*), coalesce(max(id), 0), coalesce(max(clock), 0) FROM messages").Scan(&n, &maxID, &maxClock); err != nil {
		return err
	}
	s.messages.Store(n)
	s.maxClock.Store(uint64(maxClock))
	s.nextID = maxID
	return s.loadAccounts()
}

// Close stops the writer after every change already queued is durable and
// indexed, deletes the log (SQLite holds all of it) and closes the
// database. Apply called after Close returns ErrClosed.
func (s *engine) Close() error {
	err := s.stopWriting()
	s.closeMu.Lock()
	done := s.readsClosed
	s.readsClosed = true
	s.closeMu.Unlock()
	if done {
		return ErrClosed
	}
	if errors.Is(err, ErrClosed) {
		err = nil // stopped before (see Store.reopen)
	}
	s.wakeForGood()
	return errors.Join(err, s.rdb.Close())
}

// stopWriting is the first half of Close: the writer, then the syncer,
// then the indexer finish what is queued and return, the log is deleted
// if SQLite holds all of it, and the indexer's connection is closed. Reads
// go on (from what SQLite holds) until Close. It returns ErrClosed when
// called again.
func (s *engine) stopWriting() error {
	s.closeMu.Lock()
	if s.closed {
		s.closeMu.Unlock()
		return ErrClosed
	}
	s.closed = true
	s.closeMu.Unlock()

	close(s.stop)
	<-s.indexed // the writer, then the syncer, then the indexer have returned
	errs := []error{s.seg.Close()}
	if s.failure() == nil && s.syncSQLite() == nil {
		s.segMu.Lock()
		for _, first := range s.segFirsts {
			s.event("remove " + segmentName(first))
			errs = append(errs, os.Remove(filepath.Join(s.logDir, segmentName(first))))
		}
		s.segMu.Unlock()
	}
	return errors.Join(append(errs, s.wdb.Close())...)
}

// readErr is the error of a read now: nil while the read pool is open.
func (s *engine) readErr() error {
	s.closeMu.RLock()
	defer s.closeMu.RUnlock()
	if !s.readsClosed {
		return nil
	}
	if err := s.failure(); err != nil {
		return err
	}
	return ErrClosed
}

// Apply queues ch, waits until it is committed to disk, and returns the message ID (0 for non-messages).
//
// If a state check fails, Apply returns ErrChannelExists, ErrNoChannel,
// ErrNoUser or an account check's error (accounts.go) and nothing but the
// request key is stored. If ctx ends while the
// change is still queued, Apply returns ctx.Err() and the change is not
// applied; once the writer has taken it, Apply waits for the commit.
func (s *engine) Apply(ctx context.Context, ch Change) (int64, error) {
	id, _, err := s.submit(ctx, ch)
	return id, err
}

// submit is Apply that also returns the LSN of the entry written (0 when
// none was: a failed check without a request key).
func (s *engine) submit(ctx context.Context, ch Change) (int64, uint64, error) {
	if err := ch.validate(); err != nil {
		return 0, 0, err
	}
	return s.enqueue(ctx, &request{change: ch.copyWithTime(time.Now()), done: make(chan struct{})})
}

// enqueue hands r to the writer and waits for its outcome.
func (s *engine) enqueue(ctx context.Context, r *request) (int64, uint64, error) {
	if err := ctx.Err(); err != nil {
		return 0, 0, err
	}
	if err := s.failure(); err != nil {
		return 0, 0, err
	}

	s.closeMu.RLock()
	if s.closed {
		s.closeMu.RUnlock()
		return 0, 0, ErrClosed
	}
	select {
	case s.queue <- r:
		s.closeMu.RUnlock()
	case <-ctx.Done():
		s.closeMu.RUnlock()
		return 0, 0, ctx.Err()
	}

	select {
	case <-r.done:
	case <-ctx.Done():
		if r.cancel() {
			return 0, 0, ctx.Err()
		}
		<-r.done // the writer has it: wait for the outcome
	}
	return r.id, r.lsn, r.err
}

// Replay returns the reply stored under a request key, if the key was
// applied within the last Config.RequestKeyTTL.
func (s *engine) Replay(key string) (reply []byte, ok bool) {
	if s.readErr() != nil {
		return nil, false
	}
	if reply, ok := s.durableKey(key); ok {
		if reply == nil {
			reply = []byte{}
		}
		return reply, true
	}
	err := s.rdb.QueryRow("SELECT reply FROM requests WHERE request_key = ? AND created_ms >= ?",
		key, s.keyCutoff(time.Now())).Scan(&reply)
	if err != nil {
		return nil, false
	}
	if reply == nil {
		reply = []byte{} // stored, but empty
	}
	return reply, true
}

// keyCutoff returns the creation time (Unix ms) before which request keys
// are forgotten.
func (s *engine) keyCutoff(now time.Time) int64 {
	return now.Add(-s.cfg.RequestKeyTTL).UnixMilli()
}

// HasUser reports whether name has ever logged in.
func (s *engine) HasUser(name string) bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.users[name]
}

// HasChannel reports whether the channel exists.
func (s *engine) HasChannel(name string) bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.channels[name]
}

// Users returns the names of all users, sorted.
func (s *engine) Users() []string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return sortedKeys(s.users)
}

// Channels returns the names of all channels, sorted.
func (s *engine) Channels() []string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return sortedKeys(s.channels)
}

// sortedKeys returns the keys of set in increasing order.
func sortedKeys(set map[string]bool) []string {
	names := make([]string, 0, len(set))
	for name := range set {
		names = append(names, name)
	}
	slices.Sort(names)
	return names
}

// Stats returns the writer's counters.
func (s *engine) Stats() Stats {
	return Stats{Batches: s.batches.Load(), Commits: s.commits.Load(), Changes: s.changes.Load()}
}

// History limits.
const (
	DefaultHistoryLimit = 50
	MaxHistoryLimit     = 500
)

// HistoryQuery selects a page of messages.
type HistoryQuery struct {
	Channel    string // a channel's posts, or
	User, Peer string // the DM conversation between User and Peer (both directions)
	Limit      int    // default 50, max 500
	Before     int64  // only messages with ID < Before (0: newest)
}

// History returns matching messages oldest first (the newest Limit of them before Before).
func (s *engine) History(ctx context.Context, q HistoryQuery) ([]Message, error) {
	if err := s.readErr(); err != nil {
		return nil, err
	}
	if err := s.waitIndexed(); err != nil {
		return nil, err
	}
	limit := q.Limit
	if limit <= 0 {
		limit = DefaultHistoryLimit
	}
	limit = min(limit, MaxHistoryLimit)
	before := q.Before
	if before <= 0 {
		before = math.MaxInt64
	}

	const columns = "SELECT id, kind, coalesce(channel, ''), sender, coalesce(recipient, ''), text, ts_ms, clock FROM messages "
	var rows *sql.Rows
	var err error
	switch {
	case q.Channel != "" && q.User == "" && q.Peer == "":
		rows, err = s.rdb.QueryContext(ctx, columns+
			"WHERE channel = ? AND id < ? ORDER BY id DESC LIMIT ?",
			q.Channel, before, limit)
	case q.Channel == "" && q.User != "" && q.Peer != "":
		low, high := pair(q.User, q.Peer)
		rows, err = s.rdb.QueryContext(ctx, columns+
			"WHERE dm_low = ? AND dm_high = ? AND id < ? ORDER BY id DESC LIMIT ?",
			low, high, before, limit)
	default:
		return nil, errors.New("store: history needs either Channel or both User and Peer")
	}
	if err != nil {
		return nil, s.sqlErr(err)
	}
	defer rows.Close()

	var msgs []Message
	for rows.Next() {
		var m Message
		var ms, clock int64
		if err := rows.Scan(&m.ID, &m.Kind, &m.Channel, &m.From, &m.To, &m.Text, &ms, &clock); err != nil {
			return nil, s.sqlErr(err)
		}
		m.Timestamp = fromMillis(ms)
		m.Clock = uint64(clock)
		msgs = append(msgs, m)
	}
	if err := rows.Err(); err != nil {
		return nil, s.sqlErr(err)
	}
	slices.Reverse(msgs) // newest first from SQL, oldest first for the caller
	return msgs, nil
}

// Logins returns every login of user, oldest first.
func (s *engine) Logins(ctx context.Context, user string) ([]Login, error) {
	if err := s.readErr(); err != nil {
		return nil, err
	}
	if err := s.waitIndexed(); err != nil {
		return nil, err
	}
	rows, err := s.rdb.QueryContext(ctx, "SELECT ts_ms FROM logins WHERE user = ? ORDER BY id", user)
	if err != nil {
		return nil, s.sqlErr(err)
	}
	defer rows.Close()
	var logins []Login
	for rows.Next() {
		var ms int64
		if err := rows.Scan(&ms); err != nil {
			return nil, s.sqlErr(err)
		}
		logins = append(logins, Login{User: user, Timestamp: fromMillis(ms)})
	}
	return logins, s.sqlErr(rows.Err())
}

// Count returns the number of stored messages. It is kept in memory, so it
// costs nothing; ctx is unused.
func (s *engine) Count(ctx context.Context) (int64, error) {
	if err := s.readErr(); err != nil {
		return 0, err
	}
	return s.messages.Load(), nil
}

// pair returns the two names of a DM conversation in a fixed order, so that
// both directions share one key.
func pair(a, b string) (low, high string) {
	if a < b {
		return a, b
	}
	return b, a
}

// fromMillis converts stored Unix milliseconds to a UTC time.
func fromMillis(ms int64) time.Time {
	return time.UnixMilli(ms).UTC()
}
