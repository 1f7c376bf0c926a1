package transport

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"sync"
)

// Fanout is an XPUB socket of our own, for the publishing side of the
// broker's proxy: subscribers (ZeroMQ SUB or XSUB peers, libzmq or zmq4)
// connect to it and receive the publications whose topic starts with one
// of their subscriptions, exactly as from an XPUB.
//
// zmq4's XPUB writes every frame header and body to every subscriber as a
// separate write from a single goroutine, and allocates a context and a
// timer per message. Fanout encodes a publication once and hands each
// matching subscriber one write of the whole message. The guarded
// transport underneath does the rest: it refuses hostile peers, heartbeats
// idle ones, and cuts off a subscriber that stops reading instead of
// letting it slow the others.
//
// Subscribing, unsubscribing and matching a publication against one
// subscriber cost O(1) map operations each (matching: one per prefix
// length of the topic up to the subscriber's longest subscription), and
// what one subscriber may hold is bounded (FanoutConfig). A subscriber
// that disconnects stops costing anything at once: what it sent and is
// not yet processed is dropped.
type Fanout struct {
	*peerServer
	cfg FanoutConfig

	mu   sync.Mutex
	subs map[*fanoutSub]struct{} // subscribers whose handshake is done
	buf  []byte                  // the message being published, under mu
}

// FanoutConfig bounds what one subscriber may ask of a Fanout.
//
// A subscription beyond MaxTopics distinct topics, or longer than
// MaxTopicLen bytes, is ignored (ZeroMQ's subscribe has no way to say
// no): the subscriber stays connected and keeps what it has, the first
// one ignored is logged (once per subscriber) and each is counted
// (GuardStats.SubscriptionsIgnored). Ignoring rather than cutting off: a
// client that reconnects would only send the same subscriptions again.
// The same topic subscribed twice counts once (and needs two
// unsubscribes, as in ZeroMQ).
type FanoutConfig struct {
	MaxTopics   int // distinct subscriptions per subscriber (default 10,000)
	MaxTopicLen int // bytes of one subscription (default 256)
}

// DefaultFanoutConfig returns the production limits.
func DefaultFanoutConfig() FanoutConfig {
	return FanoutConfig{MaxTopics: 10_000, MaxTopicLen: 256}
}

// Validate reports a config that cannot work.
func (c FanoutConfig) Validate() error {
	switch {
	case c.MaxTopics <= 0:
		return errors.New("fanout: MaxTopics must be > 0")
	case c.MaxTopicLen <= 0:
		return errors.New("fanout: MaxTopicLen must be > 0")
	}
	return nil
}

// fanoutSub is one connected subscriber.
type fanoutSub struct {
	conn net.Conn
	cfg  FanoutConfig

	mu      sync.RWMutex
	topics  map[string]int // its subscriptions (a prefix each; "" matches all) and how many times each
	longest int            // no subscription is longer (reset when none is left)
	warned  bool           // a subscription was ignored and logged (serve goroutine only)
}

func newFanoutSub(conn net.Conn, cfg FanoutConfig) *fanoutSub {
	return &fanoutSub{conn: conn, cfg: cfg, topics: map[string]int{}}
}

// ListenFanout binds a Fanout to ep (tcp://host:port) over the guarded
// transport, with DefaultFanoutConfig.
func ListenFanout(ctx context.Context, ep string) (*Fanout, error) {
	return ListenFanoutConfig(ctx, ep, DefaultFanoutConfig())
}

// ListenFanoutConfig is ListenFanout with the limits given.
func ListenFanoutConfig(ctx context.Context, ep string, cfg FanoutConfig) (*Fanout, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	f := &Fanout{cfg: cfg, subs: map[*fanoutSub]struct{}{}}
	var err error
	if f.peerServer, err = listenPeers(ctx, ep, f.serve); err != nil {
		return nil, fmt.Errorf("fanout: %w", err)
	}
	return f, nil
}

// Subscribers returns how many subscribers are connected.
func (f *Fanout) Subscribers() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.subs)
}

// Publish sends a message (frames[0] is its topic) to every subscriber
// whose subscriptions match the topic. It never blocks on a subscriber.
func (f *Fanout) Publish(frames [][]byte) {
	if len(frames) == 0 {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.buf = f.buf[:0]
	for i, fr := range frames {
		var flags byte
		if i < len(frames)-1 {
			flags = zFlagMore
		}
		f.buf = appendFrameHeader(f.buf, flags, int64(len(fr)))
		f.buf = append(f.buf, fr...)
	}
	topic := frames[0]
	for s := range f.subs {
		if s.matches(topic) {
			// A write error means the guard has cut the subscriber off; its
			// reader sees the connection closed and removes it.
			_, _ = s.conn.Write(f.buf)
		}
	}
}

// serve does the ZMTP handshake as an XPUB, then follows the subscriber's
// subscriptions until it goes away.
func (f *Fanout) serve(conn net.Conn) {
	r := bufio.NewReader(conn)
	if err := handshake(conn, r, "XPUB", "SUB", "XSUB"); err != nil {
		return
	}
	s := newFanoutSub(conn, f.cfg)
	f.mu.Lock()
	f.subs[s] = struct{}{}
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		delete(f.subs, s)
		f.mu.Unlock()
	}()
	gc, _ := conn.(*guardConn)
	inMsg := false // the last frame had MORE: this one is not a subscription
	for {
		if gc != nil && gc.dead.Load() {
			return // gone: what it sent and we have not read is no one's work
		}
		// Subscriptions longer than MaxTopicLen are skipped unread.
		flags, body, err := readFrameMax(r, 1+s.cfg.MaxTopicLen)
		more, part := flags&zFlagMore != 0, inMsg
		if flags&zFlagCommand == 0 {
			inMsg = more
		}
		if err == errFrameSkipped {
			if !more && !part && flags&zFlagCommand == 0 {
				s.ignored("longer than MaxTopicLen")
			}
			continue
		}
		if err != nil {
			return
		}
		// The guard turns ZMTP 3.1 SUBSCRIBE and CANCEL commands into the
		// 3.0 form: a message of one frame whose first byte is 1
		// (subscribe) or 0 (unsubscribe).
		if flags&zFlagCommand != 0 || more || part || len(body) == 0 {
			continue
		}
		switch body[0] {
		case 1:
			if !s.subscribe(string(body[1:])) {
				s.ignored("over MaxTopics")
			}
		case 0:
			s.unsubscribe(string(body[1:]))
		}
	}
}

// ignored counts a subscription not taken, and logs the first one.
func (s *fanoutSub) ignored(why string) {
	gstats.subsIgnored.Add(1)
	if s.warned {
		return
	}
	s.warned = true
	if l := guardLog.Load(); l != nil {
		l.Warn("subscriptions ignored from now on: "+why+" (logged once per subscriber)",
			"peer", s.conn.RemoteAddr().String(), "max_topics", s.cfg.MaxTopics, "max_topic_len", s.cfg.MaxTopicLen)
	}
}

// handshake sends our greeting and READY as a socket of type ours (as zmq4
// would: the guard checks the greeting byte for byte) and reads the
// peer's, whose type must be one of peers.
func handshake(conn net.Conn, r *bufio.Reader, ours string, peers ...string) error {
	out := append(zmq4Greeting[:], encodeReady([]zProp{{name: zPropSocketType, value: []byte(ours)}})...)
	if _, err := conn.Write(out); err != nil {
		return err
	}
	if _, err := io.ReadFull(r, make([]byte, zGreetingLen)); err != nil {
		return err
	}
	flags, body, err := readFrame(r)
	if err != nil {
		return err
	}
	if flags&zFlagCommand == 0 || len(body) < 6 || string(body[:6]) != "\x05READY" {
		return errors.New("no READY from the peer")
	}
	props, err := parseReady(body)
	if err != nil {
		return err
	}
	st, _ := findProp(props, zPropSocketType)
	if !slices.Contains(peers, string(st)) {
		return fmt.Errorf("a %s peer cannot talk to a %s", st, ours)
	}
	return nil
}

// errFrameSkipped: readFrameMax discarded a frame over its limit.
var errFrameSkipped = errors.New("frame skipped")

// readFrameMax is readFrame for frames of up to max bytes: a longer one is
// discarded without being held in memory (errFrameSkipped, with its flags).
func readFrameMax(r *bufio.Reader, max int) (flags byte, body []byte, err error) {
	flags, size, err := readFrameHeader(r)
	if err != nil {
		return 0, nil, err
	}
	if size > uint64(max) {
		if _, err := io.CopyN(io.Discard, r, int64(size)); err != nil {
			return 0, nil, err
		}
		return flags, nil, errFrameSkipped
	}
	body = make([]byte, size)
	_, err = io.ReadFull(r, body)
	return flags, body, err
}

// readFrame reads one frame of a stream the guard has already checked.
func readFrame(r *bufio.Reader) (flags byte, body []byte, err error) {
	flags, size, err := readFrameHeader(r)
	if err != nil {
		return 0, nil, err
	}
	body = make([]byte, size) // size <= GuardConfig.MaxFrame, checked by the guard
	_, err = io.ReadFull(r, body)
	return flags, body, err
}

// readFrameHeader reads a frame's flags and body size (short or long form).
func readFrameHeader(r *bufio.Reader) (flags byte, size uint64, err error) {
	if flags, err = r.ReadByte(); err != nil {
		return 0, 0, err
	}
	if flags&zFlagLong != 0 {
		var b [8]byte
		if _, err = io.ReadFull(r, b[:]); err != nil {
			return 0, 0, err
		}
		return flags, binary.BigEndian.Uint64(b[:]), nil
	}
	b, err := r.ReadByte()
	if err != nil {
		return 0, 0, err
	}
	return flags, uint64(b), nil
}

func (s *fanoutSub) matches(topic []byte) bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if len(s.topics) == 0 {
		return false
	}
	for n := min(len(topic), s.longest); n >= 0; n-- {
		if _, ok := s.topics[string(topic[:n])]; ok { // no allocation: map lookup by []byte
			return true
		}
	}
	return false
}

// subscribe adds a subscription; like ZeroMQ, the same one twice needs two
// unsubscribes. It returns false, changing nothing, when the subscription
// is a new topic and the subscriber holds MaxTopics already.
func (s *fanoutSub) subscribe(t string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	n, ok := s.topics[t]
	if !ok && len(s.topics) >= s.cfg.MaxTopics {
		return false
	}
	s.topics[t] = n + 1
	s.longest = max(s.longest, len(t))
	return true
}

func (s *fanoutSub) unsubscribe(t string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch n := s.topics[t]; {
	case n > 1:
		s.topics[t] = n - 1
	case n == 1:
		delete(s.topics, t)
		if len(s.topics) == 0 {
			s.longest = 0
		}
	}
}
