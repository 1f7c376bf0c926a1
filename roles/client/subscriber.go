package client

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/go-zeromq/zmq4"

	"chat/proto"
	"chat/transport"
)

// SubscriberConfig configures a Subscriber.
type SubscriberConfig struct {
	Endpoint       string        // the broker's pub-out endpoint
	ReconnectDelay time.Duration // pause before dialing again after losing the broker

	// State, when set, is called from the subscriber's goroutine each time
	// the connection is made (true) or lost (false), once per change; the
	// loss is then the owner's to report, and is logged at debug level
	// only. Without it, a loss is logged as a warning.
	State func(connected bool)
}

// Subscriber receives the publications of the broker's pub-out socket for
// a set of topics. It owns one SUB socket and one goroutine. Topics match
// exactly: ZeroMQ filters by prefix, so a publication whose topic is not
// one of the subscribed topics (geral2 for geral) is dropped here.
//
// The socket is dialed in the subscriber's goroutine, so NewSubscriber
// returns at once even when the broker is down. When the broker goes away,
// Recv fails; the socket is then closed and a fresh one is dialed (until
// the broker is back) and subscribed to every topic. zmq4's automatic
// reconnect is not used: it runs its dial, which never gives up, inside
// whichever call noticed the loss first, which may be a Subscribe.
type Subscriber struct {
	cfg     SubscriberConfig
	deliver func(proto.Received)
	log     *slog.Logger

	mu     sync.Mutex
	topics map[string]bool
	sock   zmq4.Socket // nil while (re)connecting

	cancel context.CancelFunc
	done   chan struct{}
}

// NewSubscriber starts a subscriber. deliver is called from the
// subscriber's goroutine with every publication of a subscribed topic, in
// order; it should return quickly (a subscriber that falls megabytes
// behind is cut off by the broker, and reconnects). Close stops it.
func NewSubscriber(ctx context.Context, cfg SubscriberConfig, deliver func(proto.Received), log *slog.Logger) *Subscriber {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(ctx)
	s := &Subscriber{
		cfg:     cfg,
		deliver: deliver,
		log:     log.With("sub", cfg.Endpoint),
		topics:  map[string]bool{},
		cancel:  cancel,
		done:    make(chan struct{}),
	}
	go s.run(ctx)
	return s
}

// Subscribe adds topic. It takes effect at once if connected, or as soon
// as the connection is made. The empty topic is ignored: to ZeroMQ it
// would mean every topic.
func (s *Subscriber) Subscribe(topic string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if topic == "" || s.topics[topic] {
		return
	}
	s.topics[topic] = true
	s.setOption(zmq4.OptionSubscribe, topic)
}

// Unsubscribe removes topic; its publications are no longer delivered.
func (s *Subscriber) Unsubscribe(topic string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.topics[topic] {
		return
	}
	delete(s.topics, topic)
	s.setOption(zmq4.OptionUnsubscribe, topic)
}

// setOption tells the connected socket about a (un)subscription. A failure
// means the connection is going away; the next connection subscribes to
// the topics anew. s.mu must be held.
func (s *Subscriber) setOption(name, topic string) {
	if s.sock == nil {
		return
	}
	if err := s.sock.SetOption(name, topic); err != nil {
		s.log.Debug("subscription not sent; it will be on reconnect", "topic", topic, "err", err)
	}
}

// Close stops the subscriber and waits for its goroutine.
func (s *Subscriber) Close() error {
	s.cancel()
	<-s.done
	return nil
}

// run connects and receives until ctx ends, reconnecting on a fresh socket
// whenever the connection is lost.
func (s *Subscriber) run(ctx context.Context) {
	defer close(s.done)
	for {
		sock, err := s.connect(ctx)
		if err == nil {
			s.report(true)
			err = s.receive(sock)
			s.disconnect(sock)
			if ctx.Err() == nil {
				s.report(false)
			}
		}
		if ctx.Err() != nil {
			return
		}
		if s.cfg.State == nil {
			s.log.Warn("lost the broker's publications, reconnecting", "err", err, "in", s.cfg.ReconnectDelay)
		} else {
			s.log.Debug("lost the broker's publications, reconnecting", "err", err, "in", s.cfg.ReconnectDelay)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(s.cfg.ReconnectDelay):
		}
	}
}

// report tells cfg.State, if set, that the connection was made or lost.
func (s *Subscriber) report(connected bool) {
	if s.cfg.State != nil {
		s.cfg.State(connected)
	}
}

// connect dials a fresh SUB socket and subscribes it to every topic. The
// dial retries until the broker is there or ctx ends.
func (s *Subscriber) connect(ctx context.Context) (zmq4.Socket, error) {
	// No dial timeout: with infinite retries, Dial returns once the broker
	// answers or ctx ends.
	sock, err := transport.DialSocket(ctx, zmq4.NewSub, s.cfg.Endpoint, 0, zmq4.WithDialerMaxRetries(-1))
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sock = sock
	for topic := range s.topics {
		s.setOption(zmq4.OptionSubscribe, topic)
	}
	s.log.Debug("subscriber connected", "topics", len(s.topics))
	return sock, nil
}

// disconnect closes sock; subscriptions wait for the next connection.
func (s *Subscriber) disconnect(sock zmq4.Socket) {
	s.mu.Lock()
	s.sock = nil
	s.mu.Unlock()
	sock.Close()
}

// receive delivers publications until Recv fails: the connection was lost,
// or the subscriber's context ended (the socket's context is its child).
func (s *Subscriber) receive(sock zmq4.Socket) error {
	for {
		msg, err := sock.Recv()
		if err != nil {
			return err
		}
		if len(msg.Frames) == 0 || !s.wants(string(msg.Frames[0])) {
			continue
		}
		r, err := proto.DecodePublication(msg.Frames)
		if err != nil {
			s.log.Debug("unreadable publication dropped", "topic", string(msg.Frames[0]), "err", err)
			continue
		}
		s.deliver(r)
	}
}

// wants reports whether topic is exactly one of the subscribed topics.
func (s *Subscriber) wants(topic string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.topics[topic]
}
