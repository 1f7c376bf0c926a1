// Package server is one replica of the chat server: it answers client
// requests on its own ROUTER socket (--listen) and, through the broker,
// on a DEALER connected to the broker's back end; it stores everything
// durably and publishes posts and direct messages to the broker's proxy.
//
// The request logic lives in handler.go (no sockets); this file owns the
// sockets, the worker pool and the lifecycle; brokerlink.go keeps the
// connection to the broker alive.
package server

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/go-zeromq/zmq4"

	"chat/clock"
	"chat/cluster"
	"chat/clusterauth"
	"chat/logging"
	"chat/proto"
	"chat/ratelimit"
	"chat/store"
	"chat/transport"
)

// Config configures a server. Every timeout is here, none is buried in code.
type Config struct {
	Name       string // unique server name (required)
	Listen     string // endpoint of the server's own ROUTER socket
	BrokerBack string // broker's back end for routed requests ("" : none)
	BrokerPub  string // broker's publish-in socket ("" : publish nowhere)
	BrokerSub  string // broker's publish-out, to hear coordinator announcements ("" : none)
	Reference  string // the reference registry ("" : run alone, a cluster of one)
	Advertise  string // endpoint peers use to reach Listen ("" : the bound address)
	// RepairStore lets a server alone start on a damaged store, keeping
	// what is sound (with peers it always does, and copies the rest).
	RepairStore bool
	DataDir     string // directory of the server's SQLite file
	// SyncInterval is the least time between two fsyncs of the store's
	// change log (store.Config.SyncInterval; negative: no pause): the
	// writes that arrive meanwhile share one fsync. ReplicatedSyncInterval
	// replaces it when the server replicates (a Reference and
	// Cluster.Replicas > 1): there a write waits for a replication round
	// as well (~0.75 ms on the project's machine) and its entries leave
	// for the followers only when the round before has returned, so the
	// coordinator may gather writes longer at little cost. Measured with
	// -bench=ReplicatedPublish (bench/): 500 µs instead of 200 cut the
	// coordinator's fsyncs from 0.32 to 0.19 per write and raised 3 ÷ 1
	// servers from 0.51 to 0.55 (same runs, medians); 1 ms was worse
	// (0.40). Alone, 200 µs stays best (-bench=PublishVsEcho).
	SyncInterval           time.Duration
	ReplicatedSyncInterval time.Duration
	ClockSkew              time.Duration
	Clock                  clock.Source // physical time source (nil: the system clock)

	Workers           int              // requests served concurrently
	Limits            proto.Limits     // request validation limits
	HeartbeatInterval time.Duration    // how often the server tells the broker it is alive
	BrokerTimeout     time.Duration    // broker silence after which the link is re-dialed
	DialTimeout       time.Duration    // bound on one connection attempt
	PublishQueue      int              // publications buffered while the broker is away
	RateLimit         ratelimit.Config // requests per second per direct client
	// MaxQueuedPerClient bounds the requests of one client (a direct
	// client's identity, or a client behind the broker) queued or being
	// served at once; beyond it a request gets an immediate erro. Other
	// servers of the cluster are not bounded.
	MaxQueuedPerClient int
	// MaxQueued bounds the requests queued for the workers in all; when
	// it is full, reading waits (the network holds the rest).
	MaxQueued int
	// LeaveTimeout bounds how long Close waits for the broker to
	// acknowledge the server's goodbye before it stops serving.
	LeaveTimeout time.Duration
	// BrokerSubscribeTimeout bounds how long a new connection to the
	// broker's publish-in holds the publications back, waiting for the
	// broker's subscription (without it they would be dropped), looked for
	// every BrokerSubscribeCheck (brokerlink.go, publish).
	BrokerSubscribeTimeout time.Duration
	BrokerSubscribeCheck   time.Duration
	// Accounts configures claimed names, their tokens and the limits on
	// failed logins (accounts.go).
	Accounts AccountsConfig
	// Cluster holds the cluster's settings (replicas, election,
	// replication and clock-sync timeouts); its Name, DataDir, Advertise,
	// Reference and BrokerSub are taken from the fields above.
	Cluster cluster.Config
	// ClusterKey, when set, is the cluster key: the server proves it to
	// the broker, the reference and its peers, and answers the cluster's
	// services only to those that prove it (PROTOCOL.md, "Cluster key").
	// Empty: the cluster runs open.
	ClusterKey  string
	ClusterAuth clusterauth.Config // the key's limits (zero fields: the defaults)
}

// DefaultConfig returns the defaults for a server called name.
func DefaultConfig(name string) Config {
	return Config{
		Name:                   name,
		Listen:                 "tcp://*:5560",
		BrokerBack:             "tcp://localhost:5556",
		BrokerPub:              "tcp://localhost:5557",
		DataDir:                "./data",
		SyncInterval:           store.DefaultSyncInterval,
		ReplicatedSyncInterval: 500 * time.Microsecond,
		Workers:                64,
		Limits:                 proto.DefaultLimits(),
		HeartbeatInterval:      time.Second,
		BrokerTimeout:          3 * time.Second,
		DialTimeout:            2 * time.Second,
		PublishQueue:           4096,
		RateLimit:              ratelimit.DefaultConfig(),
		Cluster:                cluster.DefaultConfig(name),
		Accounts:               DefaultAccountsConfig(),

		MaxQueuedPerClient: 32,
		MaxQueued:          1024,
		LeaveTimeout:       time.Second,

		BrokerSubscribeTimeout: 2 * time.Second,
		BrokerSubscribeCheck:   5 * time.Millisecond,
	}
}

// Validate reports a config that cannot work.
func (c Config) Validate() error {
	switch {
	case c.Name == "":
		return errors.New("server: a name is required (--name)")
	case proto.ValidName(c.Name, c.Limits.MaxName) != nil:
		return fmt.Errorf("server: bad name %q: %v", c.Name, proto.ValidName(c.Name, c.Limits.MaxName))
	case strings.ContainsAny(c.Name, `/\`) || c.Name == "." || c.Name == "..":
		// The name is also the data files' name: it must stay inside --data.
		return fmt.Errorf("server: bad name %q: a server name cannot contain / or \\, nor be . or ..", c.Name)
	case c.Listen == "":
		return errors.New("server: a listen endpoint is required (--listen)")
	case c.DataDir == "":
		return errors.New("server: a data directory is required (--data)")
	case c.Workers < 1:
		return errors.New("server: workers must be at least 1")
	case c.HeartbeatInterval <= 0 || c.BrokerTimeout <= c.HeartbeatInterval:
		return errors.New("server: broker timeout must be longer than the heartbeat interval")
	case c.DialTimeout <= 0:
		return errors.New("server: dial timeout must be positive")
	case c.PublishQueue < 1:
		return errors.New("server: publish queue must hold at least 1")
	case c.BrokerSubscribeCheck <= 0 || c.BrokerSubscribeTimeout <= c.BrokerSubscribeCheck:
		return errors.New("server: the broker subscribe timeout must be longer than its check interval, which must be positive")
	case c.MaxQueuedPerClient < 1:
		return errors.New("server: each client must be allowed at least 1 queued request")
	case c.MaxQueued < 1:
		return errors.New("server: the request queue must hold at least 1")
	case c.LeaveTimeout < 0:
		return errors.New("server: leave timeout must not be negative")
	}
	if err := c.Limits.Validate(); err != nil {
		return fmt.Errorf("server: %w", err)
	}
	switch max := transport.CurrentGuardConfig().MaxFrame; {
	case c.Limits.MaxReply <= 0:
		return fmt.Errorf("server: replies must be bounded (Limits.MaxReply): every hop refuses frames over %d bytes", max)
	case int64(c.Limits.MaxReply) > max:
		return fmt.Errorf("server: replies may be up to %d bytes, but the transport accepts frames of at most %d: the broker would cut this server off", c.Limits.MaxReply, max)
	}
	if _, err := clusterauth.ForKey(c.ClusterKey, c.ClusterAuth); err != nil {
		return fmt.Errorf("server: %w", err)
	}
	if err := c.clusterConfig("tcp://127.0.0.1:1").Validate(); err != nil {
		return err
	}
	if err := c.Accounts.Validate(); err != nil {
		return err
	}
	return c.RateLimit.Validate()
}

// openStore opens the server's store. A damaged one (a corrupted change
// log or SQLite file) is repaired when the server has peers to copy the
// lost entries from: the damaged files are kept under <name>.db.damaged,
// what is sound is kept, and the server takes part in no election until
// it holds again everything it held (held, the LSN returned). A server
// alone refuses to start, unless RepairStore says to repair anyway.
func openStore(cfg Config, log *slog.Logger) (st *store.Store, held uint64, err error) {
	scfg := cfg.storeConfig()
	st, err = store.Open(scfg)
	var damaged *store.CorruptError
	if !errors.As(err, &damaged) {
		return st, 0, err
	}
	if cfg.Reference == "" && !cfg.RepairStore {
		return nil, 0, fmt.Errorf("%w; a server alone has no peer to copy the lost entries from: start it with --repair-store to keep what is sound (the damaged files are kept under %s.damaged)", err, scfg.Path)
	}
	log.Error("the store is damaged: keeping what is sound and copying the rest from the coordinator", "err", err, "damaged_files", scfg.Path+".damaged")
	if damaged.LSN > 0 {
		st, err = store.OpenTruncated(scfg, damaged.LSN)
		return st, damaged.Seen, err
	}
	return store.OpenRebuilt(scfg)
}

// storeConfig is the config of the server's store.
func (c Config) storeConfig() store.Config {
	scfg := store.DefaultConfig(filepath.Join(c.DataDir, c.Name+".db"))
	scfg.SyncInterval = c.SyncInterval
	if c.Reference != "" && c.Cluster.Replicas > 1 {
		scfg.SyncInterval = c.ReplicatedSyncInterval
	}
	return scfg
}

// clusterConfig is the cluster's config with the server's own fields
// filled in; bound is the listen socket's dialable address, advertised
// when Advertise is empty.
func (c Config) clusterConfig(bound string) cluster.Config {
	cc := c.Cluster
	cc.Name, cc.DataDir, cc.Reference, cc.BrokerSub = c.Name, c.DataDir, c.Reference, c.BrokerSub
	cc.Advertise = c.Advertise
	if cc.Advertise == "" {
		cc.Advertise = bound
	}
	return cc
}

// job is one request to serve and the way back to its sender.
type job struct {
	req   transport.Routed
	reply func(zmq4.Msg) error
	// client is whom the request counts against in the per-client bound
	// ("": nobody); gone reports that its sender has disconnected, so the
	// reply could not be delivered (nil: never known).
	client string
	gone   func() bool
}

// intake counts the requests of each client queued or being served.
type intake struct {
	max int
	mu  sync.Mutex
	n   map[string]int
}

// take counts one more request of client, or reports that it has its
// maximum already.
func (in *intake) take(client string) bool {
	if client == "" {
		return true
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.n[client] >= in.max {
		return false
	}
	in.n[client]++
	return true
}

// done counts a request of client finished (answered or dropped).
func (in *intake) done(client string) {
	if client == "" {
		return
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.n[client]--; in.n[client] <= 0 {
		delete(in.n, client)
	}
}

// tooMany is the erro text for a client over MaxQueuedPerClient.
func tooMany(max int) string {
	return fmt.Sprintf("too many requests queued: at most %d per client; wait for the answers before sending more", max)
}

// stopping is the retryable erro text for a request that comes while the
// server stops.
const stopping = "this server is stopping; try again"

// Server is a running server replica.
type Server struct {
	cfg     Config
	log     *slog.Logger
	store   *store.Store
	lamport *clock.Lamport
	handler *Handler
	node    *cluster.Node
	key     *clusterauth.Member // nil: the cluster runs open
	refused *clusterauth.Refusals

	front   zmq4.Socket
	peers   *peerConns // the front's connections, by routing identity
	limiter *ratelimit.Limiter
	intake  *intake
	jobs    chan job
	pubs    chan proto.Publication
	link    *brokerLink // nil without a broker

	intakeMu     sync.RWMutex // held to send on jobs; closeIntake takes it to close jobs
	intakeClosed bool

	cancel    context.CancelFunc
	wg        sync.WaitGroup // readFront and the broker link
	workers   sync.WaitGroup
	closeOnce sync.Once
	closeErr  error
}

// Start opens the store, binds the listen socket and starts serving.
// Close stops it.
func Start(ctx context.Context, cfg Config, log *slog.Logger) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.DataDir, 0o755); err != nil {
		return nil, fmt.Errorf("server: data directory: %w", err)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	st, held, err := openStore(cfg, log)
	if err != nil {
		return nil, err
	}
	lamport := &clock.Lamport{}
	lamport.Observe(st.MaxClock()) // never back to 0 after a restart
	log = logging.WithClock(log, lamport).With("server", cfg.Name)

	// Close alone stops the server, in order (goodbye to the broker,
	// drain, sockets, cluster, store): the caller's ctx ending (SIGTERM
	// in the command line) must not tear the sockets down first.
	ctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s := &Server{
		cfg:     cfg,
		log:     log,
		store:   st,
		lamport: lamport,
		jobs:    make(chan job, cfg.MaxQueued),
		pubs:    make(chan proto.Publication, cfg.PublishQueue),
		cancel:  cancel,
		limiter: ratelimit.New(cfg.RateLimit),
		intake:  &intake{max: cfg.MaxQueuedPerClient, n: map[string]int{}},
		peers:   &peerConns{conns: map[string]*zmq4.Conn{}},
	}
	s.handler = &Handler{Store: st, Lamport: lamport, Clock: clock.NewPhysical(cfg.Clock, cfg.ClockSkew), Limits: cfg.Limits, Log: log,
		Accounts: NewAccounts(cfg.Accounts)}
	s.key, _ = clusterauth.ForKey(cfg.ClusterKey, cfg.ClusterAuth) // checked by Validate
	if s.key == nil {
		log.Warn(clusterauth.OpenWarning)
	}

	s.front, err = transport.ListenSocket(ctx, zmq4.NewRouter, cfg.Listen, zmq4.WithSecurity(s.peers))
	if err != nil {
		cancel()
		st.Close()
		return nil, err
	}
	if cfg.Reference != "" && cfg.Advertise == "" {
		log.Warn("no --advertise given: peers will reach this server at "+s.Addr()+", which works on this machine only", "listen", cfg.Listen)
	}
	cc := cfg.clusterConfig(s.Addr())
	cc.AbstainUntil = held
	s.node, err = cluster.Start(ctx, cc, cluster.Deps{
		Store: st, Lamport: lamport, Clock: s.handler.Clock, Publish: s.publish, Log: log, Key: s.key,
	})
	if err != nil {
		cancel()
		s.front.Close()
		st.Close()
		return nil, err
	}
	s.handler.Cluster = s.node
	s.log = s.node.Logger() // every line: clock, server, rank, coordinator
	log = s.log
	s.handler.Log = s.log
	s.refused = clusterauth.NewRefusals(s.log, s.key) // before the workers, its only users
	for range cfg.Workers {
		s.workers.Go(s.work)
	}
	s.wg.Go(func() { s.readFront(ctx) })
	if cfg.BrokerBack != "" || cfg.BrokerPub != "" {
		s.link = &brokerLink{cfg: cfg, log: log, enqueue: s.enqueue, intake: s.intake, handler: s.handler, pubs: s.pubs, leading: s.node.Leading, key: s.key}
		s.wg.Go(func() { s.link.run(ctx) })
	}
	log.Info("server started", "listen", s.Addr(), "broker_back", cfg.BrokerBack, "broker_pub", cfg.BrokerPub, "data", cfg.DataDir,
		"cluster_key", s.key != nil)
	return s, nil
}

// Addr returns the endpoint clients can dial to reach this server directly.
func (s *Server) Addr() string { return transport.BoundEndpoint(s.front) }

// Store returns the server's store (for tests and status).
func (s *Server) Store() *store.Store { return s.store }

// Close stops serving, waits for every goroutine and closes the store.
// First it says goodbye to the broker, which then routes nothing more
// here; every request received until then is served and answered, so
// nothing acknowledged is lost and no client of the broker waits for a
// server that has gone. Requests that come meanwhile get a retryable
// erro.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		if s.link != nil {
			s.link.leave(s.cfg.LeaveTimeout)
		}
		s.closeIntake()
		s.workers.Wait() // every queued request served and answered
		s.cancel()
		s.front.Close() // unblocks readFront
		s.wg.Wait()
		s.node.Close()
		s.closeErr = s.store.Close()
		s.log.Info("server stopped")
	})
	return s.closeErr
}

// enqueue hands j to the workers, waiting while they are all busy; false
// once the server is stopping.
func (s *Server) enqueue(j job) bool {
	s.intakeMu.RLock()
	defer s.intakeMu.RUnlock()
	if s.intakeClosed {
		return false
	}
	s.jobs <- j
	return true
}

// closeIntake stops enqueue; the workers serve what is queued and stop.
func (s *Server) closeIntake() {
	s.intakeMu.Lock()
	defer s.intakeMu.Unlock()
	if !s.intakeClosed {
		s.intakeClosed = true
		close(s.jobs)
	}
}

// Node returns the server's part in the cluster (for tests and status).
func (s *Server) Node() *cluster.Node { return s.node }

// publish queues a publication for the broker, dropping it when the
// queue is full (the cluster's announcements are repeated anyway).
func (s *Server) publish(p proto.Publication) {
	if s.cfg.BrokerPub == "" {
		return
	}
	select {
	case s.pubs <- p:
	default:
	}
}

// peerIdentity marks the requests of other servers of the cluster.
var peerIdentity = []byte(cluster.PeerIdentity)

// readFront reads requests from the server's own ROUTER socket.
func (s *Server) readFront(ctx context.Context) {
	for {
		msg, err := s.front.Recv()
		if err != nil {
			if ctx.Err() != nil {
				transport.DrainClosed(s.front)
				return
			}
			continue // a peer went away; zmq4 reports it as an error here
		}
		r, err := transport.SplitRoute(msg.Frames)
		if err != nil {
			continue // nothing to answer to
		}
		id := msg.Frames[0]
		conn := s.peers.lookup(id)
		if conn != nil && conn.Closed() {
			continue // its sender has gone: nothing to serve, no one to answer
		}
		peer := bytes.HasPrefix(id, peerIdentity) && (s.key == nil || proto.PeekService(r.Body) == clusterauth.Service)
		client := ""
		if !peer {
			if !s.limiter.Allow(string(id), time.Now()) {
				s.front.Send(r.Reply(s.handler.Refuse(r.Body, fmt.Sprintf(
					"rate limit: at most %g requests per second per client; slow down", s.cfg.RateLimit.Rate))))
				continue
			}
			if lim := s.cfg.Limits.MaxRequest; lim > 0 && len(r.Body) > lim {
				// Answered now ("request is N bytes, the limit is M"),
				// never queued: it could hold up to 16 MiB.
				reply, _ := s.handler.Handle(ctx, r.Body)
				s.front.Send(r.Reply(reply))
				continue
			}
			client = "front\x00" + string(id)
			if !s.intake.take(client) {
				s.front.Send(r.Reply(s.handler.Refuse(r.Body, tooMany(s.cfg.MaxQueuedPerClient))))
				continue
			}
		}
		j := job{req: r, reply: s.front.Send, client: client}
		if conn != nil {
			j.gone = conn.Closed
		}
		if !s.enqueue(j) {
			s.intake.done(client)
			if !peer { // another server retries by itself; its requests get no erro it could misread
				s.front.Send(r.Reply(refuseRetry(s.handler, r.Body, stopping)))
			}
		}
	}
}

// refuseRetry is an erro reply to frame with "retry": true: it was not
// served, and may be sent again at once (elsewhere).
func refuseRetry(h *Handler, frame []byte, why string) []byte {
	return h.refuse(frame, why, true)
}

// work serves jobs until the queue is closed and empty.
func (s *Server) work() {
	maxFrame := transport.CurrentGuardConfig().MaxFrame
	for j := range s.jobs {
		if j.gone != nil && j.gone() {
			s.intake.done(j.client) // its sender has gone: the reply could not be delivered
			continue
		}
		// The request is served to the end even if the server is
		// stopping: a write is either acknowledged or never made.
		reply, pubs := s.serve(withClient(context.Background(), j.client), j.req.Body)
		if int64(len(reply)) > maxFrame {
			// Only the cluster's own replies are not bounded by
			// Limits.MaxReply; over the frame limit, the link would be cut.
			s.log.Error("reply over the transport's frame limit, refused", "bytes", len(reply), "limit", maxFrame, "service", proto.PeekService(j.req.Body))
			reply = s.handler.Refuse(j.req.Body, fmt.Sprintf("the reply would be %d bytes, over the transport's limit of %d", len(reply), maxFrame))
		}
		// The publications are queued before the reply goes out: a client
		// that posts again once it has the acknowledgement then has its
		// posts published in the order it made them. Queued after the
		// reply, the next post, served by another worker, could overtake
		// this one on its way to the subscribers.
		s.queuePublications(pubs)
		if err := j.reply(j.req.Reply(reply)); err != nil {
			s.log.Debug("reply not delivered", "err", err)
		}
		s.intake.done(j.client)
	}
}

// queuePublications hands the publications of a request to the broker
// link, dropping each one the queue has no room for (history still has
// it).
func (s *Server) queuePublications(pubs []proto.Publication) {
	if s.cfg.BrokerPub == "" {
		return // publishing nowhere
	}
	for _, p := range pubs {
		select {
		case s.pubs <- p:
		default:
			s.log.Warn("publish queue full, publication dropped (history still has it)", "topic", p.Topic)
		}
	}
}

// peerConns remembers the connection of each peer of the front socket by
// the routing identity zmq4's ROUTER puts on its messages, so that the
// requests of a peer that has disconnected are dropped instead of served.
// zmq4 tells a ROUTER's user nothing of its connections; but each one is
// handed to the socket's Security for its handshake, so peerConns is the
// NULL mechanism (the same bytes as zmq4's own) that also records the
// connection. Conn.Closed turns true once zmq4 has read the connection's
// end, or failed to write a reply to it.
type peerConns struct {
	transport.NullMechanism
	mu    sync.Mutex
	conns map[string]*zmq4.Conn
	sweep int // size at which closed connections are forgotten next
}

// Handshake is zmq4's NULL handshake (READY both ways), then records conn.
func (p *peerConns) Handshake(conn *zmq4.Conn, server bool) error {
	if err := transport.NullHandshake(conn); err != nil {
		return err
	}
	id := conn.Peer.Meta["Identity"] // the guarded transport always sets one
	if id == "" {
		return nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.conns[id] = conn
	if len(p.conns) >= p.sweep {
		for k, c := range p.conns {
			if c.Closed() {
				delete(p.conns, k)
			}
		}
		p.sweep = max(64, 2*len(p.conns))
	}
	return nil
}

// lookup returns the connection of the peer with routing identity id (nil
// when unknown).
func (p *peerConns) lookup(id []byte) *zmq4.Conn {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.conns[string(id)]
}
