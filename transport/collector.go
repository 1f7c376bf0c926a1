package transport

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
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
	ln     net.Listener
	handle func(frames [][]byte)
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu    sync.Mutex
	conns map[net.Conn]struct{}
}

// ListenCollector binds a Collector to ep (tcp://host:port) over the
// guarded transport. handle receives every message; it may be called from
// several goroutines at once (one per publisher) and must not keep frames.
func ListenCollector(ctx context.Context, ep string, handle func(frames [][]byte)) (*Collector, error) {
	rest, ok := strings.CutPrefix(Endpoint(ep), Scheme+"://")
	if !ok {
		return nil, fmt.Errorf("collector: %s is not a tcp:// endpoint", Public(ep))
	}
	addr, err := plainTCP.Addr(rest)
	if err != nil {
		return nil, err
	}
	ln, err := guardTransport{}.Listen(ctx, addr)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", Public(ep), err)
	}
	ctx, cancel := context.WithCancel(ctx)
	c := &Collector{ln: ln, handle: handle, ctx: ctx, cancel: cancel, conns: map[net.Conn]struct{}{}}
	c.wg.Go(c.accept)
	return c, nil
}

// Addr returns the address the Collector listens on.
func (c *Collector) Addr() net.Addr { return c.ln.Addr() }

// Close stops accepting, disconnects every publisher and waits for the
// Collector's goroutines.
func (c *Collector) Close() error {
	c.cancel()
	err := c.ln.Close()
	c.mu.Lock()
	for conn := range c.conns {
		conn.Close()
	}
	c.mu.Unlock()
	c.wg.Wait()
	return err
}

func (c *Collector) accept() {
	for {
		conn, err := c.ln.Accept()
		if err != nil {
			if c.ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		c.mu.Lock()
		if c.ctx.Err() != nil {
			c.mu.Unlock()
			conn.Close()
			return
		}
		c.conns[conn] = struct{}{}
		c.mu.Unlock()
		c.wg.Go(func() { c.serve(conn) })
	}
}

// serve subscribes a publisher to everything and hands on what it sends.
func (c *Collector) serve(conn net.Conn) {
	defer func() {
		c.mu.Lock()
		delete(c.conns, conn)
		c.mu.Unlock()
		conn.Close()
	}()
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
