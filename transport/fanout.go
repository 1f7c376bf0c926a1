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
	"sync/atomic"
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
type Fanout struct {
	*peerServer

	mu   sync.Mutex
	subs map[*fanoutSub]struct{} // subscribers whose handshake is done
	buf  []byte                  // the message being published, under mu
}

// fanoutSub is one connected subscriber.
type fanoutSub struct {
	conn   net.Conn
	topics atomic.Pointer[[]string] // its subscriptions (a prefix each; "" matches all)
}

// ListenFanout binds a Fanout to ep (tcp://host:port) over the guarded
// transport.
func ListenFanout(ctx context.Context, ep string) (*Fanout, error) {
	f := &Fanout{subs: map[*fanoutSub]struct{}{}}
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
	s := &fanoutSub{conn: conn}
	s.topics.Store(&[]string{})
	f.mu.Lock()
	f.subs[s] = struct{}{}
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		delete(f.subs, s)
		f.mu.Unlock()
	}()
	for {
		flags, body, err := readFrame(r)
		if err != nil {
			return
		}
		// The guard turns ZMTP 3.1 SUBSCRIBE and CANCEL commands into the
		// 3.0 form: a message whose first byte is 1 (subscribe) or 0.
		if flags&zFlagCommand != 0 || flags&zFlagMore != 0 || len(body) == 0 {
			continue
		}
		switch body[0] {
		case 1:
			s.subscribe(string(body[1:]))
		case 0:
			s.unsubscribe(string(body[1:]))
		}
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

// readFrame reads one frame of a stream the guard has already checked.
func readFrame(r *bufio.Reader) (flags byte, body []byte, err error) {
	if flags, err = r.ReadByte(); err != nil {
		return 0, nil, err
	}
	var size uint64
	if flags&zFlagLong != 0 {
		var b [8]byte
		if _, err = io.ReadFull(r, b[:]); err != nil {
			return 0, nil, err
		}
		size = binary.BigEndian.Uint64(b[:])
	} else {
		b, err := r.ReadByte()
		if err != nil {
			return 0, nil, err
		}
		size = uint64(b)
	}
	body = make([]byte, size) // size <= GuardConfig.MaxFrame, checked by the guard
	_, err = io.ReadFull(r, body)
	return flags, body, err
}

func (s *fanoutSub) matches(topic []byte) bool {
	for _, t := range *s.topics.Load() {
		if len(topic) >= len(t) && string(topic[:len(t)]) == t {
			return true
		}
	}
	return false
}

// subscribe adds a subscription; like ZeroMQ, the same one twice needs two
// unsubscribes.
func (s *fanoutSub) subscribe(t string) {
	old := *s.topics.Load()
	next := append(append(make([]string, 0, len(old)+1), old...), t)
	s.topics.Store(&next)
}

func (s *fanoutSub) unsubscribe(t string) {
	old := *s.topics.Load()
	for i, x := range old {
		if x == t {
			next := append(append(make([]string, 0, len(old)-1), old[:i]...), old[i+1:]...)
			s.topics.Store(&next)
			return
		}
	}
}
