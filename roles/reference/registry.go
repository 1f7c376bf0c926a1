package reference

import (
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"time"

	_ "modernc.org/sqlite" // registers the "sqlite" database/sql driver
)

// Server is one registered server as the reference knows it.
type Server struct {
	Name       string    // the server's unique name
	Rank       int       // unique, stable for the name across restarts
	Addr       string    // endpoint peers use to reach it ("" when it gave none)
	Registered time.Time // when the name first got its rank (zero when unknown)
	LastSeen   time.Time // last rank or heartbeat since the reference started (zero: none)
}

// errUnknownServer is a heartbeat from a name that never asked for a rank.
var errUnknownServer = errors.New("unknown server")

// registry is the reference's state, with no sockets and no goroutines:
// every name that ever got a rank, and when each was last heard from. The
// reference drives it with requests and the current time, so tests drive it
// with a fake clock. It is not safe for concurrent use: the reference
// holds a mutex around it.
//
// Every change to the set of names or their addresses goes through save
// (the SQLite file) before the registry changes, so a rank that was
// answered is never forgotten. Liveness is not saved: after a restart every
// server is out of the list until it is heard from again.
type registry struct {
	timeout time.Duration      // silence after which a server leaves the list
	save    func(Server) error // durable write of a new name or a new address (nil: none)
	servers map[string]*entry  // by name, every name ever registered
	maxRank int
}

// entry is one known server and whether it is in the list.
type entry struct {
	Server
	listed bool // in the list as far as the logs are concerned (see expire)
}

// newRegistry returns a registry of the servers known from a previous run,
// which are not alive until they are heard from.
func newRegistry(timeout time.Duration, known []Server, save func(Server) error) *registry {
	r := &registry{timeout: timeout, save: save, servers: make(map[string]*entry, len(known))}
	for _, s := range known {
		s.LastSeen = time.Time{}
		r.servers[s.Name] = &entry{Server: s}
		r.maxRank = max(r.maxRank, s.Rank)
	}
	return r
}

// rank answers the rank service: a known name keeps its rank (its address
// is updated when addr is not empty), a new name gets the next rank. Either
// way the server is alive now. isNew tells the two apart.
func (r *registry) rank(name, addr string, now time.Time) (s Server, isNew bool, err error) {
	e, known := r.servers[name]
	if !known {
		s = Server{Name: name, Rank: r.maxRank + 1, Addr: addr, Registered: now}
		if err := r.persist(s); err != nil {
			return Server{}, false, err
		}
		e = &entry{Server: s}
		r.servers[name] = e
		r.maxRank = s.Rank
		isNew = true
	} else if err := r.updateAddr(e, addr); err != nil {
		return Server{}, false, err
	}
	e.LastSeen, e.listed = now, true
	return e.Server, isNew, nil
}

// heartbeat marks a registered server alive now (updating its address when
// addr is not empty). A name that never got a rank is errUnknownServer.
// rejoined is true when the server was not in the list: it had expired, or
// the reference restarted since it was last heard from.
func (r *registry) heartbeat(name, addr string, now time.Time) (s Server, rejoined bool, err error) {
	e, known := r.servers[name]
	if !known {
		return Server{}, false, errUnknownServer
	}
	if err := r.updateAddr(e, addr); err != nil {
		return Server{}, false, err
	}
	rejoined = !r.alive(e, now) || !e.listed
	e.LastSeen, e.listed = now, true
	return e.Server, rejoined, nil
}

// list returns the servers alive at now (heard from within the timeout),
// by rank.
func (r *registry) list(now time.Time) []Server {
	out := []Server{}
	for _, e := range r.servers {
		if r.alive(e, now) {
			out = append(out, e.Server)
		}
	}
	slices.SortFunc(out, func(a, b Server) int { return a.Rank - b.Rank })
	return out
}

// expire returns the servers that left the list since the last call: those
// in it before and silent for longer than the timeout at now. The list
// itself never waits for expire (list checks the time), so expire only says
// when to tell the logs.
func (r *registry) expire(now time.Time) []Server {
	var gone []Server
	for _, e := range r.servers {
		if e.listed && !r.alive(e, now) {
			e.listed = false
			gone = append(gone, e.Server)
		}
	}
	slices.SortFunc(gone, func(a, b Server) int { return a.Rank - b.Rank })
	return gone
}

// known returns every registered server, alive or not, by rank.
func (r *registry) known() []Server {
	out := make([]Server, 0, len(r.servers))
	for _, e := range r.servers {
		out = append(out, e.Server)
	}
	slices.SortFunc(out, func(a, b Server) int { return a.Rank - b.Rank })
	return out
}

func (r *registry) alive(e *entry, now time.Time) bool {
	return !e.LastSeen.IsZero() && now.Sub(e.LastSeen) <= r.timeout
}

// updateAddr saves a changed address, then records it.
func (r *registry) updateAddr(e *entry, addr string) error {
	if addr == "" || addr == e.Addr {
		return nil
	}
	s := e.Server
	s.Addr = addr
	if err := r.persist(s); err != nil {
		return err
	}
	e.Addr = addr
	return nil
}

func (r *registry) persist(s Server) error {
	if r.save == nil {
		return nil
	}
	return r.save(s)
}

// The registry's file: one table, written synchronously before any reply.

const schema = `CREATE TABLE IF NOT EXISTS servers(
	name TEXT PRIMARY KEY,
	rank INTEGER UNIQUE NOT NULL,
	addr TEXT NOT NULL DEFAULT '',
	registered_ms INTEGER NOT NULL
)`

// openDB opens (creating it if needed) the registry's SQLite file.
func openDB(path string) (*sql.DB, error) {
	db, err := sql.Open("sqlite", dsn(path))
	if err != nil {
		return nil, fmt.Errorf("reference: open %s: %w", path, err)
	}
	db.SetMaxOpenConns(1) // one writer, and the pragmas hold on its one connection
	if _, err := db.Exec(schema); err != nil {
		db.Close()
		return nil, fmt.Errorf("reference: open %s: %w", path, err)
	}
	return db, nil
}

// dsn returns the driver's data source name for the file at path: every
// commit is fsynced (synchronous=FULL) before the reference answers.
func dsn(path string) string {
	q := url.Values{}
	q.Add("_pragma", "busy_timeout(10000)")
	q.Add("_pragma", "journal_mode(WAL)")
	q.Add("_pragma", "synchronous(FULL)")
	u := url.URL{Scheme: "file", Path: path, RawQuery: q.Encode()}
	if path != "" && path[0] != '/' {
		u.Opaque = url.PathEscape(path) // a relative path: "file:reference.db?..."
	}
	return u.String()
}

// loadServers reads every registered server.
func loadServers(db *sql.DB) ([]Server, error) {
	rows, err := db.Query("SELECT name, rank, addr, registered_ms FROM servers ORDER BY rank")
	if err != nil {
		return nil, fmt.Errorf("reference: load servers: %w", err)
	}
	defer rows.Close()
	var out []Server
	for rows.Next() {
		var s Server
		var ms int64
		if err := rows.Scan(&s.Name, &s.Rank, &s.Addr, &ms); err != nil {
			return nil, fmt.Errorf("reference: load servers: %w", err)
		}
		s.Registered = time.UnixMilli(ms)
		out = append(out, s)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("reference: load servers: %w", err)
	}
	return out, nil
}

// saveServer writes a new server, or the new address of a known one (its
// rank and registration time never change).
func saveServer(db *sql.DB, s Server) error {
	_, err := db.Exec(`INSERT INTO servers(name, rank, addr, registered_ms) VALUES(?, ?, ?, ?)
		ON CONFLICT(name) DO UPDATE SET addr = excluded.addr`,
		s.Name, s.Rank, s.Addr, s.Registered.UnixMilli())
	if err != nil {
		return fmt.Errorf("reference: save server %q: %w", s.Name, err)
	}
	return nil
}
