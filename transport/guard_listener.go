package transport

import (
	"errors"
	"net"
	"sync"
	"time"
)

// guardListener accepts TCP connections, runs the server side of the ZMTP
// handshake for each in its own goroutine, and returns from Accept only
// connections whose peer sent a valid greeting and READY. Accept therefore
// never blocks on a peer, and invalid or silent peers never reach zmq4.
type guardListener struct {
	inner    net.Listener
	ready    chan *guardConn
	done     chan struct{}
	loopDone chan struct{}
	once     sync.Once

	budget frameBudget // for large frames (GuardConfig.LargeFrameBudget)

	mu        sync.Mutex
	closed    bool
	pre       map[*guardConn]struct{} // not yet handed to zmq4
	ids       map[string]*guardConn   // routing identities of live conns
	perAddr   map[string]int          // live conns per source address
	refusedAt map[string]refusalLog   // per address: when a refusal was last logged
}

// refusalLog rate-limits the log of refused connections per address.
type refusalLog struct {
	at     time.Time // last line logged
	silent int       // refusals since, not logged
}

// refusalLogEvery is how often refusals of one address are logged.
const refusalLogEvery = time.Minute

func newGuardListener(inner net.Listener) *guardListener {
	l := &guardListener{
		inner:     inner,
		ready:     make(chan *guardConn),
		done:      make(chan struct{}),
		loopDone:  make(chan struct{}),
		pre:       map[*guardConn]struct{}{},
		ids:       map[string]*guardConn{},
		perAddr:   map[string]int{},
		refusedAt: map[string]refusalLog{},
	}
	go l.acceptLoop()
	return l
}

func (l *guardListener) acceptLoop() {
	defer close(l.loopDone)
	var backoff time.Duration
	for {
		raw, err := l.inner.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// EMFILE and the like: back off instead of spinning.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			select {
			case <-l.done:
				return
			case <-time.After(backoff):
			}
			continue
		}
		backoff = 0
		cfg := CurrentGuardConfig()
		gstats.accepted.Add(1)
		addr := sourceAddr(raw.RemoteAddr())
		l.mu.Lock()
		if l.closed {
			l.mu.Unlock()
			_ = raw.Close()
			return
		}
		if n := l.perAddr[addr]; n >= cfg.MaxConnsPerAddr {
			line := l.refusedLocked(addr)
			l.mu.Unlock()
			_ = raw.Close()
			gstats.addrRefused.Add(1)
			if line != nil {
				line(n)
			}
			continue
		}
		l.perAddr[addr]++
		c := newGuardConn(raw, cfg, l)
		c.srcAddr = addr
		l.pre[c] = struct{}{}
		l.mu.Unlock()
		setKeepAlive(raw, cfg)
		c.start()
	}
}

// handoff gives a handshaken conn to zmq4's accept loop.
func (l *guardListener) handoff(c *guardConn) bool {
	t := time.NewTimer(c.cfg.HandshakeTimeout)
	defer t.Stop()
	select {
	case l.ready <- c:
		l.mu.Lock()
		delete(l.pre, c)
		l.mu.Unlock()
		return true
	case <-l.done:
	case <-t.C:
	}
	return false
}

// Accept returns the next connection that completed the handshake.
func (l *guardListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ready:
		return c, nil
	case <-l.done:
	case <-l.loopDone:
	}
	return nil, net.ErrClosed
}

// Close stops accepting and closes the connections still in handshake.
// Connections already handed to zmq4 belong to zmq4.
func (l *guardListener) Close() error {
	var err error
	l.once.Do(func() {
		l.mu.Lock()
		l.closed = true
		l.mu.Unlock()
		close(l.done)
		err = l.inner.Close()
		<-l.loopDone
		l.mu.Lock()
		pre := make([]*guardConn, 0, len(l.pre))
		for c := range l.pre {
			pre = append(pre, c)
		}
		l.mu.Unlock()
		for _, c := range pre {
			c.abort(errGuardClosed)
			<-c.readerDone
		}
	})
	return err
}

func (l *guardListener) Addr() net.Addr { return l.inner.Addr() }

// register records the routing identity of an accepted conn. An empty,
// reserved (leading 0x00) or already used identity is replaced with a
// generated one, libzmq style, so zmq4's ROUTER (which routes by this
// metadata) never mixes two peers up.
func (l *guardListener) register(c *guardConn, id []byte) []byte {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(id) == 0 || id[0] == 0 || l.ids[string(id)] != nil {
		if len(id) > 0 {
			gstats.idRewritten.Add(1)
		}
		for {
			id = newRoutingID()
			if l.ids[string(id)] == nil {
				break
			}
		}
	} else {
		id = append([]byte(nil), id...)
	}
	l.ids[string(id)] = c
	c.regID = string(id)
	return id
}

// sourceAddr is the address connections are counted by: the peer's IP.
func sourceAddr(a net.Addr) string {
	if ta, ok := a.(*net.TCPAddr); ok {
		return ta.IP.String()
	}
	host, _, err := net.SplitHostPort(a.String())
	if err != nil {
		return a.String()
	}
	return host
}

// refusedLocked records a refusal of addr and returns the function that
// logs it, or nil when addr was logged less than a minute ago.
func (l *guardListener) refusedLocked(addr string) func(n int) {
	now := time.Now()
	r, seen := l.refusedAt[addr]
	if seen && now.Sub(r.at) < refusalLogEvery {
		r.silent++
		l.refusedAt[addr] = r
		return nil
	}
	if len(l.refusedAt) >= 4096 { // forget the addresses not refused for a minute
		for a, r := range l.refusedAt {
			if now.Sub(r.at) >= refusalLogEvery {
				delete(l.refusedAt, a)
			}
		}
	}
	l.refusedAt[addr] = refusalLog{at: now}
	local := l.inner.Addr().String()
	return func(n int) {
		if lg := guardLog.Load(); lg != nil {
			lg.Warn("connections refused: too many from one address (MaxConnsPerAddr); logged once a minute per address",
				"peer", addr, "listener", local, "open", n, "refused_unlogged_last_minute", r.silent)
		}
	}
}

// release forgets c (called once, when c dies).
func (l *guardListener) release(c *guardConn) {
	l.mu.Lock()
	if c.srcAddr != "" {
		if l.perAddr[c.srcAddr]--; l.perAddr[c.srcAddr] <= 0 {
			delete(l.perAddr, c.srcAddr)
		}
	}
	delete(l.pre, c)
	if c.regID != "" && l.ids[c.regID] == c {
		delete(l.ids, c.regID)
	}
	l.mu.Unlock()
}

var _ net.Listener = (*guardListener)(nil)
