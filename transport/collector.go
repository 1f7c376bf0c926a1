package transport

import (
	"bufio"
	"context"
	"fmt"
	"net"
)

// Collector is a bound SUB socket of our own, for the receiving side of
// the broker's proxy: publishers (ZeroMQ PUB or XPUB peers) connect to it,
// it subscribes to everything they publish, and it hands each whole
// message to a function, from the goroutine that read it. Publishers that
// connect or reconnect at any time are included.
//
// Together with Fanout it keeps zmq4's per-message channels, contexts and
// timers off the proxy's path; the guarded transport underneath checks
// every byte the publishers send.
type Collector struct {
	*peerServer
	handle func(frames [][]byte)
}

// ListenCollector binds a Collector to ep (tcp://host:port) over the
// guarded transport. handle receives every message; it may be called from
// several goroutines at once (one per publisher) and must not keep frames.
func ListenCollector(ctx context.Context, ep string, handle func(frames [][]byte)) (*Collector, error) {
	c := &Collector{handle: handle}
	var err error
	if c.peerServer, err = listenPeers(ctx, ep, c.serve); err != nil {
		return nil, fmt.Errorf("collector: %w", err)
	}
	return c, nil
}

// serve subscribes a publisher to everything and hands on what it sends.
func (c *Collector) serve(conn net.Conn) {
	r := bufio.NewReader(conn)
	if err := handshake(conn, r, "SUB", "PUB", "XPUB"); err != nil {
		return
	}
	// Subscribe to every topic, in the ZMTP 3.0 form both zmq4 and libzmq
	// publishers accept from a 3.0 peer: a message of one byte, 1.
	if _, err := conn.Write([]byte{0, 1, 1}); err != nil {
		return
	}
	var frames [][]byte
	for {
		flags, body, err := readFrame(r)
		if err != nil {
			return
		}
		if flags&zFlagCommand != 0 {
			continue
		}
		frames = append(frames, body)
		if flags&zFlagMore != 0 {
			continue
		}
		if len(frames) >= 2 { // a publication: [topic][payload]
			c.handle(frames)
		}
		frames = frames[:0]
	}
}
