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
	"sync"
	"time"

	"github.com/go-zeromq/zmq4"

	"chat/clock"
	"chat/cluster"
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
	DataDir    string // directory of the server's SQLite file
	ClockSkew  time.Duration
	Clock      clock.Source // physical time source (nil: the system clock)

	Workers           int              // requests served concurrently
	Limits            proto.Limits     // request validation limits
	HeartbeatInterval time.Duration    // how often the server tells the broker it is alive
	BrokerTimeout     time.Duration    // broker silence after which the link is re-dialed
	DialTimeout       time.Duration    // bound on one connection attempt
	PublishQueue      int              // publications buffered while the broker is away
	RateLimit         ratelimit.Config // requests per second per direct client
	// Cluster holds the cluster's settings (replicas, election,
	// replication and clock-sync timeouts); its Name, DataDir, Advertise,
	// Reference and BrokerSub are taken from the fields above.
	Cluster cluster.Config
}

// DefaultConfig returns the defaults for a server called name.
func DefaultConfig(name string) Config {
	return Config{
		Name:              name,
		Listen:            "tcp://*:5560",
		BrokerBack:        "tcp://localhost:5556",
		BrokerPub:         "tcp://localhost:5557",
		DataDir:           "./data",
		Workers:           64,
		Limits:            proto.DefaultLimits(),
		HeartbeatInterval: time.Second,
		BrokerTimeout:     3 * time.Second,
		DialTimeout:       2 * time.Second,
		PublishQueue:      4096,
		RateLimit:         ratelimit.DefaultConfig(),
		Cluster:           cluster.DefaultConfig(name),
	}
}

// Validate reports a config that cannot work.
func (c Config) Validate() error {
	switch {
	case c.Name == "":
		return errors.New("server: a name is required (--name)")
	case proto.ValidName(c.Name, c.Limits.MaxName) != nil:
		return fmt.Errorf("server: bad name %q: %v", c.Name, proto.ValidName(c.Name, c.Limits.MaxName))
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
	}
	if err := c.clusterConfig("tcp://127.0.0.1:1").Validate(); err != nil {
		return err
	}
	return c.RateLimit.Validate()
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
}

// Server is a running server replica.
type Server struct {
	cfg     Config
	log     *slog.Logger
	store   *store.Store
	lamport *clock.Lamport
	handler *Handler
	node    *cluster.Node

	front   zmq4.Socket
	limiter *ratelimit.Limiter
	jobs    chan job
	pubs    chan proto.Publication

	cancel context.CancelFunc
	wg     sync.WaitGroup
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
	st, err := store.Open(store.DefaultConfig(filepath.Join(cfg.DataDir, cfg.Name+".db")))
	if err != nil {
		return nil, err
	}
	lamport := &clock.Lamport{}
	lamport.Observe(st.MaxClock()) // never back to 0 after a restart
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = logging.WithClock(log, lamport).With("server", cfg.Name)

	ctx, cancel := context.WithCancel(ctx)
	s := &Server{
		cfg:     cfg,
		log:     log,
		store:   st,
		lamport: lamport,
		jobs:    make(chan job, cfg.Workers),
		pubs:    make(chan proto.Publication, cfg.PublishQueue),
		cancel:  cancel,
		limiter: ratelimit.New(cfg.RateLimit),
	}
	s.handler = &Handler{Store: st, Lamport: lamport, Clock: clock.NewPhysical(cfg.Clock, cfg.ClockSkew), Limits: cfg.Limits, Log: log}

	s.front, err = transport.ListenSocket(ctx, zmq4.NewRouter, cfg.Listen)
	if err != nil {
		cancel()
		st.Close()
		return nil, err
	}
	if cfg.Reference != "" && cfg.Advertise == "" {
		log.Warn("no --advertise given: peers will reach this server at "+s.Addr()+", which works on this machine only", "listen", cfg.Listen)
	}
	s.node, err = cluster.Start(ctx, cfg.clusterConfig(s.Addr()), cluster.Deps{
		Store: st, Lamport: lamport, Clock: s.handler.Clock, Publish: s.publish, Log: log,
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
	for range cfg.Workers {
		s.wg.Go(func() { s.work(ctx) })
	}
	s.wg.Go(func() { s.readFront(ctx) })
	if cfg.BrokerBack != "" || cfg.BrokerPub != "" {
		link := &brokerLink{cfg: cfg, log: log, jobs: s.jobs, pubs: s.pubs}
		s.wg.Go(func() { link.run(ctx) })
	}
	log.Info("server started", "listen", s.Addr(), "broker_back", cfg.BrokerBack, "broker_pub", cfg.BrokerPub, "data", cfg.DataDir)
	return s, nil
}

// Addr returns the endpoint clients can dial to reach this server directly.
func (s *Server) Addr() string { return transport.BoundEndpoint(s.front) }

// Store returns the server's store (for tests and status).
func (s *Server) Store() *store.Store { return s.store }

// Close stops serving, waits for every goroutine and closes the store.
// Requests being served finish first, so nothing acknowledged is lost.
func (s *Server) Close() error {
	s.cancel()
	s.front.Close() // unblocks readFront
	s.wg.Wait()
	s.node.Close()
	err := s.store.Close()
	s.log.Info("server stopped")
	return err
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
				return
			}
			continue // a peer went away; zmq4 reports it as an error here
		}
		r, err := transport.SplitRoute(msg.Frames)
		if err != nil {
			continue // nothing to answer to
		}
		if !bytes.HasPrefix(msg.Frames[0], peerIdentity) && !s.limiter.Allow(string(msg.Frames[0]), time.Now()) {
			s.front.Send(r.Reply(s.handler.Refuse(r.Body, fmt.Sprintf(
				"rate limit: at most %g requests per second per client; slow down", s.cfg.RateLimit.Rate))))
			continue
		}
		select {
		case s.jobs <- job{req: r, reply: s.front.Send}:
		case <-ctx.Done():
			return
		}
	}
}

// work serves jobs until ctx ends.
func (s *Server) work(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case j := <-s.jobs:
			// The request is served to the end even if ctx ends meanwhile:
			// a write is either acknowledged or never made.
			reply, pubs := s.handler.Handle(context.WithoutCancel(ctx), j.req.Body)
			if err := j.reply(j.req.Reply(reply)); err != nil {
				s.log.Debug("reply not delivered", "err", err)
			}
			if s.cfg.BrokerPub == "" {
				continue // publishing nowhere
			}
			for _, p := range pubs {
				select {
				case s.pubs <- p:
				default:
					s.log.Warn("publish queue full, publication dropped (history still has it)", "topic", p.Topic)
				}
			}
		}
	}
}
