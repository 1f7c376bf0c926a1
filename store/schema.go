package store

// schema creates the tables on first use. Times are Unix milliseconds; in the
// sqlite3 tool, datetime(ts_ms / 1000, 'unixepoch') shows them.
const schema = `
CREATE TABLE IF NOT EXISTS users (
	name          TEXT PRIMARY KEY,
	first_seen_ms INTEGER NOT NULL
);

CREATE TABLE IF NOT EXISTS logins (
	id    INTEGER PRIMARY KEY,
	user  TEXT NOT NULL,
	ts_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS logins_by_user ON logins (user, id);

CREATE TABLE IF NOT EXISTS channels (
	name       TEXT PRIMARY KEY,
	creator    TEXT NOT NULL,
	created_ms INTEGER NOT NULL
);

-- A post has channel set; a direct message has recipient set. kind, dm_low
-- and dm_high are computed by SQLite (nothing to bind on insert): dm_low,
-- dm_high hold a DM's two users in sorted order so both directions of one
-- conversation share one index range.
CREATE TABLE IF NOT EXISTS messages (
	id        INTEGER PRIMARY KEY,
	channel   TEXT,
	sender    TEXT NOT NULL,
	recipient TEXT,
	text      TEXT NOT NULL,
	ts_ms     INTEGER NOT NULL,
	clock     INTEGER NOT NULL,
	kind      TEXT GENERATED ALWAYS AS (CASE WHEN recipient IS NULL THEN 'post' ELSE 'direct' END) VIRTUAL,
	dm_low    TEXT GENERATED ALWAYS AS (min(sender, recipient)) VIRTUAL,
	dm_high   TEXT GENERATED ALWAYS AS (max(sender, recipient)) VIRTUAL
);
CREATE INDEX IF NOT EXISTS messages_by_channel ON messages (channel, id) WHERE channel IS NOT NULL;
CREATE INDEX IF NOT EXISTS messages_by_dm ON messages (dm_low, dm_high, id) WHERE dm_low IS NOT NULL;

-- Accounts (accounts.go): the claimed user names, with the password's
-- slow salted hash and the user's public key ('' when none), and the live
-- login tokens, stored as their SHA-256 only (hex).
CREATE TABLE IF NOT EXISTS accounts (
	name          TEXT PRIMARY KEY,
	password_hash TEXT NOT NULL,
	public_key    TEXT NOT NULL DEFAULT '',
	created_ms    INTEGER NOT NULL
);

CREATE TABLE IF NOT EXISTS tokens (
	token_sha256 TEXT PRIMARY KEY,
	user         TEXT NOT NULL,
	expires_ms   INTEGER NOT NULL
);

-- Replies to requests that carried a request id, kept for a while so that a
-- retried request is answered again instead of applied twice.
CREATE TABLE IF NOT EXISTS requests (
	request_key TEXT PRIMARY KEY,
	reply       BLOB NOT NULL,
	created_ms  INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS requests_by_age ON requests (created_ms);

-- Every change log entry, as encoded in the log, by log sequence number:
-- the replication stream that catches up a server that missed entries (a
-- server that is new or whose log diverged reads it from lsn 1). epoch is
-- the coordinator's epoch that ordered the entry.
CREATE TABLE IF NOT EXISTS log (
	lsn   INTEGER PRIMARY KEY,
	epoch INTEGER NOT NULL,
	entry BLOB NOT NULL
);

-- The last change log entry applied here (key 'applied_lsn'): on Open, the
-- entries of the log beyond it are applied.
CREATE TABLE IF NOT EXISTS meta (
	key   TEXT PRIMARY KEY,
	value INTEGER NOT NULL
);
`
