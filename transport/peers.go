package transport

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
)

// peerServer accepts connections on one endpoint over the guarded
// transport and serves each in a goroutine of its own. Close disconnects
// them all and waits for their goroutines. Collector and Fanout are built
// on it.
type peerServer struct {
	ln     net.Listener
	serve  func(net.Conn)
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu    sync.Mutex
	conns map[net.Conn]struct{}
}

// listenPeers binds ep (tcp://host:port) and starts accepting.
func listenPeers(ctx context.Context, ep string, serve func(net.Conn)) (*peerServer, error) {
	rest, ok := strings.CutPrefix(Endpoint(ep), Scheme+"://")
	if !ok {
		return nil, fmt.Errorf("%s is not a tcp:// endpoint", Public(ep))
	}
	addr, err := plainTCP.Addr(rest)
	if err != nil {
		return nil, err
	}
	ln, err := guardTransport{}.Listen(ctx, addr)
	if err != nil {
		return nil, listenError(ep, err)
	}
	ctx, cancel := context.WithCancel(ctx)
	p := &peerServer{ln: ln, serve: serve, ctx: ctx, cancel: cancel, conns: map[net.Conn]struct{}{}}
	p.wg.Go(p.accept)
	return p, nil
}

// Addr returns the address it listens on.
func (p *peerServer) Addr() net.Addr { return p.ln.Addr() }

// Close stops accepting, disconnects every peer and waits for the
// goroutines.
func (p *peerServer) Close() error {
	p.cancel()
	err := p.ln.Close()
	p.mu.Lock()
	for conn := range p.conns {
		conn.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
	return err
}

func (p *peerServer) accept() {
	for {
		conn, err := p.ln.Accept()
		if err != nil {
			if p.ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		p.mu.Lock()
		if p.ctx.Err() != nil {
			p.mu.Unlock()
			conn.Close()
			return
		}
		p.conns[conn] = struct{}{}
		p.mu.Unlock()
		p.wg.Go(func() {
			defer func() {
				p.mu.Lock()
				delete(p.conns, conn)
				p.mu.Unlock()
				conn.Close()
			}()
			p.serve(conn)
		})
	}
}
