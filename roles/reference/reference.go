// Package reference is the registry of servers: every server asks it for a
// rank when it starts (rank), tells it regularly that it is alive
// (heartbeat), and asks it which servers are alive now (list), to find its
// peers and to elect a coordinator.
//
// A rank is unique and stable: a name keeps the rank it got the first time,
// across restarts of the server and of the reference, because every new
// name is written to an SQLite file (<data>/reference.db) and fsynced
// before the reply. Liveness is not stored: a server that has not been
// heard from for ServerTimeout leaves the list, and after a restart of the
// reference every server is out of the list until its next heartbeat.
//
// The registry logic lives in registry.go (no sockets, time passed in);
// this file owns the ROUTER socket, the worker and the lifecycle.
package reference

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/go-zeromq/zmq4"

	"chat/clock"
	"chat/clusterauth"
	"chat/logging"
	"chat/proto"
	"chat/transport"
)

// Services of the reference (PROTOCOL.md, "Server ↔ reference").
const (
	ServiceRank      = "rank"
	ServiceList      = "list"
	ServiceHeartbeat = "heartbeat"
)

// MaxAddr is the longest address (endpoint string) a server may register,
// in bytes.
const MaxAddr = 256

// FileName is the name of the registry's SQLite file in the data directory.
const FileName = "reference.db"

// Config configures a reference. Every timeout is here.
type Config struct {
	Listen        string        // endpoint of the reference's ROUTER socket
	DataDir       string        // directory of reference.db
	ServerTimeout time.Duration // silence after which a server leaves the list
	CheckInterval time.Duration // how often silent servers are looked for (to log their leaving)
	Clock         clock.Source  // physical time source (nil: the system clock)
	Limits        proto.Limits  // MaxName bounds server names, MaxRequest request frames
	Queue         int           // requests read and waiting for the worker
	// ClusterKey, when set, is the cluster key: the reference answers only
	// requests that prove it, and authenticates its answers (PROTOCOL.md,
	// "Cluster key"). Empty: the cluster runs open.
	ClusterKey  string
	ClusterAuth clusterauth.Config // the key's limits (zero fields: the defaults)
}

// DefaultConfig returns the defaults: the standard's port 5559.
func DefaultConfig() Config {
	return Config{
		Listen:        "tcp://*:5559",
		DataDir:       "./data",
		ServerTimeout: 3 * time.Second,
		CheckInterval: 250 * time.Millisecond,
		Limits:        proto.DefaultLimits(),
		Queue:         64,
	}
}

// Validate reports a config that cannot work.
func (c Config) Validate() error {
	switch {
	case c.Listen == "":
		return errors.New("reference: a listen endpoint is required (--listen)")
	case c.DataDir == "":
		return errors.New("reference: a data directory is required (--data)")
	case c.ServerTimeout <= 0:
		return errors.New("reference: server timeout must be positive (--server-timeout)")
	case c.CheckInterval <= 0 || c.CheckInterval > c.ServerTimeout:
		return errors.New("reference: check interval must be positive and at most the server timeout")
	case c.Limits.MaxName < 1 || c.Limits.MaxRequest < 1:
		return errors.New("reference: limits MaxName and MaxRequest must be positive")
	case c.Queue < 1:
		return errors.New("reference: queue must hold at least 1 request")
	}
	if _, err := clusterauth.ForKey(c.ClusterKey, c.ClusterAuth); err != nil {
		return fmt.Errorf("reference: %w", err)
	}
	return nil
}

// Reference is a running reference.
type Reference struct {
	cfg     Config
	log     *slog.Logger
	clock   clock.Source
	lamport *clock.Lamport
	closeDB func() error
	key     *clusterauth.Member // nil: the cluster runs open
	refused *clusterauth.Refusals

	mu  sync.Mutex // guards reg
	reg *registry

	sock zmq4.Socket
	jobs chan transport.Routed

	cancel    context.CancelFunc
	wg        sync.WaitGroup
	closeOnce sync.Once
	closeErr  error
}

// Start opens <DataDir>/reference.db, binds the listen socket and starts
// serving. Close stops it.
func Start(ctx context.Context, cfg Config, log *slog.Logger) (*Reference, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.DataDir, 0o755); err != nil {
		return nil, fmt.Errorf("reference: data directory: %w", err)
	}
	path := filepath.Join(cfg.DataDir, FileName)
	db, err := openDB(path)
	if err != nil {
		return nil, err
	}
	known, err := loadServers(db)
	if err != nil {
		db.Close()
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	lamport := &clock.Lamport{}
	log = logging.WithClock(log, lamport).With("role", "reference")
	src := cfg.Clock
	if src == nil {
		src = clock.System{}
	}

	ctx, cancel := context.WithCancel(ctx)
	r := &Reference{
		cfg:     cfg,
		log:     log,
		clock:   src,
		lamport: lamport,
		closeDB: db.Close,
		reg:     newRegistry(cfg.ServerTimeout, known, func(s Server) error { return saveServer(db, s) }),
		jobs:    make(chan transport.Routed, cfg.Queue),
		cancel:  cancel,
	}
	r.key, _ = clusterauth.ForKey(cfg.ClusterKey, cfg.ClusterAuth) // checked by Validate
	r.refused = clusterauth.NewRefusals(log, r.key)
	if r.key == nil {
		log.Warn(clusterauth.OpenWarning)
	}
	r.sock, err = transport.ListenSocket(ctx, zmq4.NewRouter, cfg.Listen)
	if err != nil {
		cancel()
		db.Close()
		return nil, err
	}
	r.wg.Go(func() { r.work(ctx) })
	r.wg.Go(func() { r.read(ctx) })
	r.wg.Go(func() { r.watch(ctx) })
	log.Info("reference started", "listen", r.Addr(), "data", path, "known_servers", len(known), "server_timeout", cfg.ServerTimeout,
		"cluster_key", r.key != nil)
	return r, nil
}

// Addr returns the endpoint servers can dial to reach the reference.
func (r *Reference) Addr() string { return transport.BoundEndpoint(r.sock) }

// List returns the servers alive at now, by rank (for tests and status).
func (r *Reference) List(now time.Time) []Server {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.reg.list(now)
}

// Known returns every server ever registered, alive or not, by rank.
func (r *Reference) Known() []Server {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.reg.known()
}

// Close stops serving, waits for every goroutine and closes the file.
// The request being served finishes first. Calling it again is harmless.
func (r *Reference) Close() error {
	r.closeOnce.Do(func() {
		r.cancel()
		r.sock.Close() // unblocks read
		r.wg.Wait()
		r.closeErr = r.closeDB()
		r.log.Info("reference stopped")
	})
	return r.closeErr
}

// read hands every request of the socket to the worker until ctx ends.
func (r *Reference) read(ctx context.Context) {
	for {
		msg, err := r.sock.Recv()
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			continue // a peer went away; zmq4 reports it as an error here
		}
		req, err := transport.SplitRoute(msg.Frames)
		if err != nil {
			continue // nothing to answer to
		}
		select {
		case r.jobs <- req:
		case <-ctx.Done():
			return
		}
	}
}

// work answers requests one at a time until ctx ends: registrations are
// few and each waits for its fsync, so one worker is plenty and keeps
// ranks trivially ordered.
func (r *Reference) work(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case req := <-r.jobs:
			if err := r.sock.Send(req.Reply(r.answer(req.Body))); err != nil {
				r.log.Debug("reply not delivered", "err", err)
			}
		}
	}
}

// watch takes silent servers out of the list (in the logs: list itself
// always checks the time) until ctx ends.
func (r *Reference) watch(ctx context.Context) {
	tick := time.NewTicker(r.cfg.CheckInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			r.mu.Lock()
			r.expire(r.clock.Now())
			r.mu.Unlock()
		}
	}
}

// expire logs the servers that left the list. r.mu must be held.
func (r *Reference) expire(now time.Time) {
	for _, s := range r.reg.expire(now) {
		r.log.Info(fmt.Sprintf("server %s left the list (no heartbeat for %v)", s.Name, r.cfg.ServerTimeout), "rank", s.Rank)
	}
}

// answer is Handle through the cluster key: with one, every service is
// for members only, so a request must come in an authenticated envelope,
// and its answer goes back authenticated; any other gets an erro "this
// cluster requires its key", logged.
func (r *Reference) answer(frame []byte) []byte {
	inner, tag, err := r.key.Admit(frame, func(string) bool { return true })
	if err != nil {
		service := proto.PeekService(frame)
		if service == "" {
			service = proto.ErrorService
		}
		r.refused.Refused("a request", err, "service", service)
		return proto.ErrorReply(service, err.Error()).Stamp(r.clock.Now(), r.lamport.Tick()).Encode()
	}
	return r.key.Answer(tag, r.Handle(inner))
}

// Handle answers one request frame. It never fails: every problem becomes
// an "erro" reply. Every reply carries the time and the Lamport clock.
func (r *Reference) Handle(frame []byte) []byte {
	now := r.clock.Now()
	env := r.serve(frame, now)
	return env.Stamp(now, r.lamport.Tick()).Encode()
}

// serve runs one request.
func (r *Reference) serve(frame []byte, now time.Time) proto.Envelope {
	if len(frame) > r.cfg.Limits.MaxRequest {
		r.lamport.Observe(0)
		return proto.ErrorReply(proto.ErrorService, fmt.Sprintf("request is %d bytes, the limit is %d", len(frame), r.cfg.Limits.MaxRequest))
	}
	env, err := proto.Decode(frame)
	r.lamport.Observe(env.Data.Clock()) // a frame that is not an envelope counts as clock 0
	if err != nil {
		return proto.ReplyFor(proto.ErrorService, err)
	}
	switch env.Service {
	case ServiceRank, ServiceHeartbeat:
		name, addr, err := r.serverFields(env)
		if err != nil {
			return proto.ReplyFor(env.Service, err)
		}
		if env.Service == ServiceRank {
			return r.rank(name, addr, now)
		}
		return r.heartbeat(name, addr, now)
	case ServiceList:
		r.mu.Lock()
		r.expire(now)
		servers := r.reg.list(now)
		r.mu.Unlock()
		out := make([]proto.Data, 0, len(servers))
		for _, s := range servers {
			out = append(out, proto.Data{"name": s.Name, "rank": s.Rank, "addr": s.Addr})
		}
		r.log.Debug("list", "alive", len(out))
		return proto.Envelope{Service: env.Service, Data: proto.Data{"list": out}}
	}
	return proto.ErrorReply(env.Service, fmt.Sprintf("unknown service %q (the reference serves %s, %s and %s)",
		env.Service, ServiceRank, ServiceList, ServiceHeartbeat))
}

func (r *Reference) rank(name, addr string, now time.Time) proto.Envelope {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.expire(now)
	s, isNew, err := r.reg.rank(name, addr, now)
	if err != nil {
		r.log.Error("registration not stored", "server", name, "err", err)
		return proto.ErrorReply(ServiceRank, "the reference could not store the registration; try again")
	}
	if isNew {
		r.log.Info(fmt.Sprintf("registered server %s with rank %d", s.Name, s.Rank), "addr", s.Addr)
	} else {
		r.log.Info(fmt.Sprintf("server %s re-registered (rank %d)", s.Name, s.Rank), "addr", s.Addr)
	}
	return proto.Envelope{Service: ServiceRank, Data: proto.Data{"rank": s.Rank}}
}

func (r *Reference) heartbeat(name, addr string, now time.Time) proto.Envelope {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.expire(now)
	s, rejoined, err := r.reg.heartbeat(name, addr, now)
	switch {
	case errors.Is(err, errUnknownServer):
		r.log.Debug("heartbeat from an unknown server", "server", name)
		return proto.ErrorReply(ServiceHeartbeat, fmt.Sprintf("unknown server %q: register with rank first", name))
	case err != nil:
		r.log.Error("address not stored", "server", name, "err", err)
		return proto.ErrorReply(ServiceHeartbeat, "the reference could not store the new address; try again")
	case rejoined:
		r.log.Info(fmt.Sprintf("server %s is back in the list (rank %d)", s.Name, s.Rank), "addr", s.Addr)
	default:
		r.log.Debug("heartbeat", "server", s.Name, "rank", s.Rank)
	}
	return proto.Envelope{Service: ServiceHeartbeat, Data: proto.Data{"status": proto.StatusOK}}
}

// serverFields reads and checks data.user (the server's name) and the
// optional data.addr.
func (r *Reference) serverFields(env proto.Envelope) (name, addr string, err error) {
	name, ok, err := env.Data.String(env.Service, "user")
	switch {
	case err != nil:
		return "", "", err
	case !ok:
		return "", "", proto.Errorf(env.Service, "field \"user\" (the server's name) is required")
	}
	if err := proto.ValidName(name, r.cfg.Limits.MaxName); err != nil {
		return "", "", proto.Errorf(env.Service, "field \"user\": %v", err)
	}
	addr, _, err = env.Data.String(env.Service, "addr")
	if err != nil {
		return "", "", err
	}
	if err := validAddr(addr); err != nil {
		return "", "", proto.Errorf(env.Service, "field \"addr\": %v", err)
	}
	return name, addr, nil
}

// validAddr checks an address a server registers ("" is none): at most
// MaxAddr bytes of UTF-8, no whitespace or control characters.
func validAddr(s string) error {
	switch {
	case len(s) > MaxAddr:
		return fmt.Errorf("address is %d bytes, the limit is %d", len(s), MaxAddr)
	case !utf8.ValidString(s):
		return errors.New("address is not valid UTF-8")
	}
	for _, c := range s {
		if unicode.IsSpace(c) || unicode.IsControl(c) {
			return fmt.Errorf("address %q contains whitespace or a control character", s)
		}
	}
	return nil
}

// ParseList reads the servers of a list reply's data (name, rank, addr),
// for the peers of the reference. A reply that is an error, or whose list
// is not a list of maps with a string name and an integer rank, is an
// error.
func ParseList(d proto.Data) ([]Server, error) {
	if status, _, _ := d.String(ServiceList, "status"); status == proto.StatusError {
		why, _, _ := d.String(ServiceList, "description")
		return nil, fmt.Errorf("reference: list refused: %s", why)
	}
	raw, ok := d["list"].([]any)
	if !ok {
		if _, present := d["list"]; !present || d["list"] == nil {
			return nil, errors.New("reference: list reply without \"list\"")
		}
		return nil, fmt.Errorf("reference: \"list\" is %T, not a list", d["list"])
	}
	out := make([]Server, 0, len(raw))
	for i, item := range raw {
		m, ok := item.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("reference: list entry %d is %T, not a map", i, item)
		}
		e := proto.Data(m)
		name, ok, err := e.String(ServiceList, "name")
		if err != nil || !ok {
			return nil, fmt.Errorf("reference: list entry %d has no string \"name\"", i)
		}
		rank, ok, err := e.Int(ServiceList, "rank")
		if err != nil || !ok {
			return nil, fmt.Errorf("reference: list entry %d (%s) has no integer \"rank\"", i, name)
		}
		addr, _, _ := e.String(ServiceList, "addr") // an extension: tolerate its absence
		out = append(out, Server{Name: name, Rank: int(rank), Addr: addr})
	}
	return out, nil
}
