// Package broker is the system's switchboard. It has two independent
// halves:
//
//   - a request router: clients' REQ sockets connect to the front ROUTER,
//     servers' DEALERs (ours) and REPs (the standard's) connect to the back
//     ROUTER, and each request goes to the next live server in round-robin
//     order (router.go, table.go). The back end watches its connections
//     (peers.go): a server whose connection closes, or that says goodbye,
//     is taken out at once; the heartbeat timeout is for silent deaths;
//   - a pub/sub proxy: servers publish into pub-in, clients subscribe on
//     pub-out, topics filtered by prefix as ZeroMQ does. Pub-in is a
//     transport.Collector (a bound SUB subscribed to everything) that hands
//     each publication straight to pub-out, a transport.Fanout (an XPUB).
//
// zmq4's DEALER copies every message to every peer, and its NewProxy
// delivers nothing and then panics, so neither is used: requests are routed
// here over ROUTER sockets, and the proxy uses the transport's own SUB and
// XPUB sides, which skip zmq4's per-message costs (measured: about twice
// the fan-out of zmq4's XPUB on the same transport).
package broker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/go-zeromq/zmq4"

	"chat/clock"
	"chat/clusterauth"
	"chat/logging"
	"chat/proto"
	"chat/ratelimit"
	"chat/transport"
)

// Config configures a broker. Every timeout is here.
type Config struct {
	Front  string // clients' requests (ROUTER)
	Back   string // servers connect here (ROUTER)
	PubIn  string // servers publish here (SUB subscribed to everything)
	PubOut string // clients subscribe here (XPUB)

	HeartbeatInterval time.Duration    // how often servers are told the broker is alive
	ServerTimeout     time.Duration    // silence after which a server gets no more requests
	RequestTimeout    time.Duration    // wait after which a request is answered with an error
	RateLimit         ratelimit.Config // requests per second per client

	// PeerCheckInterval is how often the back end's connections are
	// checked: a server whose connection closed is taken out, a REP
	// server that connected is added (0: 50 ms).
	PeerCheckInterval time.Duration
	// MaxReply is the largest reply servers send (their
	// proto.Limits.MaxReply; 0: the default, 512 KiB). The transport must
	// accept frames that large, or a legitimate reply would cut a server
	// off: Validate checks it.
	MaxReply int
	// ClusterKey, when set, admits only the servers that prove it: on the
	// back end, a server joins with an authenticated heartbeat, and on
	// publish-in only authenticated publications are fanned out (PROTOCOL.md,
	// "Cluster key"). Empty: the cluster runs open.
	ClusterKey  string
	ClusterAuth clusterauth.Config // the key's limits (zero fields: the defaults)
}

// withDefaults fills in the fields whose zero value means the default.
func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.PeerCheckInterval == 0 {
		c.PeerCheckInterval = d.PeerCheckInterval
	}
	if c.MaxReply == 0 {
		c.MaxReply = d.MaxReply
	}
	return c
}

// DefaultConfig returns the well-known ports of the standard.
func DefaultConfig() Config {
	return Config{
		Front:             "tcp://*:5555",
		Back:              "tcp://*:5556",
		PubIn:             "tcp://*:5557",
		PubOut:            "tcp://*:5558",
		HeartbeatInterval: time.Second,
		ServerTimeout:     3 * time.Second,
		RequestTimeout:    10 * time.Second,
		RateLimit:         ratelimit.DefaultConfig(),
		PeerCheckInterval: 50 * time.Millisecond,
		MaxReply:          proto.DefaultLimits().MaxReply,
	}
}

// Validate reports a config that cannot work.
func (c Config) Validate() error {
	c = c.withDefaults()
	switch {
	case c.Front == "" || c.Back == "" || c.PubIn == "" || c.PubOut == "":
		return errors.New("broker: the four endpoints (--front, --back, --pub-in, --pub-out) are required")
	case c.HeartbeatInterval <= 0 || c.ServerTimeout <= c.HeartbeatInterval:
		return errors.New("broker: server timeout must be longer than the heartbeat interval")
	case c.RequestTimeout <= 0:
		return errors.New("broker: request timeout must be positive")
	case c.PeerCheckInterval < 0 || c.PeerCheckInterval >= c.ServerTimeout:
		return errors.New("broker: the peer check interval must be positive and shorter than the server timeout")
	case c.MaxReply < 0:
		return errors.New("broker: the largest reply must not be negative")
	case int64(c.MaxReply) > transport.CurrentGuardConfig().MaxFrame:
		return fmt.Errorf("broker: servers may send replies of %d bytes, but the transport accepts frames of at most %d: a legitimate reply would cut its server off",
			c.MaxReply, transport.CurrentGuardConfig().MaxFrame)
	}
	if _, err := clusterauth.ForKey(c.ClusterKey, c.ClusterAuth); err != nil {
		return fmt.Errorf("broker: %w", err)
	}
	return c.RateLimit.Validate()
}

// Broker is a running broker.
type Broker struct {
	cfg     Config
	log     *slog.Logger
	lamport *clock.Lamport

	front, back zmq4.Socket
	peers       *backPeers
	key         *clusterauth.Member // nil: the cluster runs open
	refused     *clusterauth.Refusals
	pubIn       *transport.Collector
	pubOut      *transport.Fanout
	router      *router

	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// Start binds the four sockets and starts routing and proxying.
func Start(ctx context.Context, cfg Config, log *slog.Logger) (*Broker, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	lamport := &clock.Lamport{}
	log = logging.WithClock(log, lamport).With("role", "broker")
	// Close alone stops the broker: servers stopping after the caller's
	// ctx ended (SIGTERM in `chat up`) still get their goodbye answered.
	ctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	key, err := clusterauth.ForKey(cfg.ClusterKey, cfg.ClusterAuth)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("broker: %w", err)
	}
	b := &Broker{cfg: cfg, log: log, lamport: lamport, cancel: cancel, peers: &backPeers{},
		key: key, refused: clusterauth.NewRefusals(log, key)}
	if key == nil {
		log.Warn(clusterauth.OpenWarning)
	}

	binds := []struct {
		sock *zmq4.Socket
		new  func(context.Context, ...zmq4.Option) zmq4.Socket
		ep   string
		opts []zmq4.Option
	}{
		{&b.front, zmq4.NewRouter, cfg.Front, nil},
		{&b.back, zmq4.NewRouter, cfg.Back, []zmq4.Option{zmq4.WithSecurity(b.peers)}},
	}
	for _, bind := range binds {
		s, err := transport.ListenSocket(ctx, bind.new, bind.ep, bind.opts...)
		if err != nil {
			b.closeSockets()
			cancel()
			return nil, err
		}
		*bind.sock = s
	}
	if b.pubOut, err = transport.ListenFanout(ctx, cfg.PubOut); err == nil {
		b.pubIn, err = transport.ListenCollector(ctx, cfg.PubIn, b.publishIn)
	}
	if err != nil {
		b.closeSockets()
		cancel()
		return nil, err
	}

	b.router = newRouter(cfg, log, lamport, b.front, b.back, b.peers)
	b.router.key, b.router.refused = key, b.refused
	b.wg.Go(func() { b.router.run(ctx) })
	log.Info("broker started", "front", b.FrontAddr(), "back", b.BackAddr(), "pub_in", b.PubInAddr(), "pub_out", b.PubOutAddr(),
		"cluster_key", key != nil)
	return b, nil
}

// publishIn hands a publication from publish-in to the subscribers. With
// a cluster key, it must carry its authenticator as a last frame
// ([topic][payload][tag]): it is checked and taken off, so subscribers
// get the standard's two frames; a publication without a valid one is
// dropped and logged.
func (b *Broker) publishIn(frames [][]byte) {
	if b.key != nil {
		var err error
		if frames, err = b.key.CheckFrames(clusterauth.Publish, frames); err != nil {
			b.refused.Refused("a publication on publish-in", err)
			return
		}
	}
	b.pubOut.Publish(frames)
}

// FrontAddr is the endpoint clients send requests to.
func (b *Broker) FrontAddr() string { return transport.BoundEndpoint(b.front) }

// BackAddr is the endpoint servers connect their DEALER to.
func (b *Broker) BackAddr() string { return transport.BoundEndpoint(b.back) }

// PubInAddr is the endpoint servers publish to.
func (b *Broker) PubInAddr() string { return transport.DialableEndpoint(b.pubIn.Addr()) }

// PubOutAddr is the endpoint clients subscribe to.
func (b *Broker) PubOutAddr() string { return transport.DialableEndpoint(b.pubOut.Addr()) }

// LiveServers returns the identities of the servers requests go to now.
func (b *Broker) LiveServers() []string { return b.router.liveServers() }

// Close stops the broker and waits for its goroutines.
func (b *Broker) Close() error {
	b.cancel()
	b.closeSockets()
	b.wg.Wait()
	b.log.Info("broker stopped")
	return nil
}

func (b *Broker) closeSockets() {
	for _, s := range []zmq4.Socket{b.front, b.back} {
		if s != nil {
			s.Close()
		}
	}
	if b.pubIn != nil {
		b.pubIn.Close()
	}
	if b.pubOut != nil {
		b.pubOut.Close()
	}
}
