package transport

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/go-zeromq/zmq4"
)

// ClientConfig configures a request Client.
type ClientConfig struct {
	// Endpoints are tried in turn; a request that times out moves on to
	// the next one.
	Endpoints []string
	// Timeout is how long one attempt waits for its reply.
	Timeout time.Duration
	// Attempts is how many tries a request gets, over all endpoints.
	Attempts int
	// DialTimeout bounds connecting to one endpoint.
	DialTimeout time.Duration
}

// DefaultClientConfig returns a config for the given endpoints.
func DefaultClientConfig(endpoints ...string) ClientConfig {
	return ClientConfig{Endpoints: endpoints, Timeout: 3 * time.Second, Attempts: 3, DialTimeout: 2 * time.Second}
}

// Validate reports a config that cannot work.
func (c ClientConfig) Validate() error {
	switch {
	case len(c.Endpoints) == 0:
		return errors.New("no endpoint to send requests to")
	case c.Timeout <= 0:
		return errors.New("request timeout must be positive")
	case c.Attempts < 1:
		return errors.New("attempts must be at least 1")
	case c.DialTimeout <= 0:
		return errors.New("dial timeout must be positive")
	}
	return nil
}

// ErrNoReply is returned when every attempt of a request timed out.
var ErrNoReply = errors.New("no reply")

// Client sends one request at a time over a REQ socket and survives the
// peer dying: the lazy-pirate pattern of the ZeroMQ guide. zmq4's REQ
// cannot recover from a lost reply (Recv has no timeout and the socket
// stays in the wrong state), so on a timeout the socket is closed, the next
// endpoint is dialed on a fresh socket and the same request is sent again.
// Requests that change state should carry a request_id so the retry is
// applied once.
//
// A Client is safe for concurrent use; requests are serialised.
type Client struct {
	cfg ClientConfig
	log *slog.Logger

	mu   sync.Mutex
	sock zmq4.Socket
	next int // index of the endpoint the next dial uses
	cur  string
}

// NewClient returns a client; it connects lazily on the first request.
func NewClient(cfg ClientConfig, log *slog.Logger) (*Client, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Client{cfg: cfg, log: log}, nil
}

// Endpoint returns the endpoint the client is connected to now ("" when
// not connected).
func (c *Client) Endpoint() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cur
}

// Do sends req and returns the reply, retrying on fresh sockets as
// configured. It returns ErrNoReply (wrapped) when every attempt timed out,
// or ctx.Err() when ctx ends first.
func (c *Client) Do(ctx context.Context, req []byte) ([]byte, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var lastErr error
	for attempt := 0; attempt < c.cfg.Attempts; attempt++ {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		reply, err := c.try(ctx, req)
		if err == nil {
			return reply, nil
		}
		lastErr = err
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		c.reset()
		if attempt+1 < c.cfg.Attempts {
			c.log.Warn("request failed, retrying on a fresh socket", "attempt", attempt+1, "err", err)
		}
	}
	return nil, fmt.Errorf("%w after %d attempts: %v", ErrNoReply, c.cfg.Attempts, lastErr)
}

// try sends once on the current socket (dialing one if needed) and waits
// up to Timeout for the reply.
func (c *Client) try(ctx context.Context, req []byte) ([]byte, error) {
	if c.sock == nil {
		if err := c.dial(ctx); err != nil {
			return nil, err
		}
	}
	sock, ep := c.sock, Public(c.cur)
	if err := sock.Send(zmq4.NewMsg(req)); err != nil {
		return nil, fmt.Errorf("send to %s: %w", ep, err)
	}
	type result struct {
		msg zmq4.Msg
		err error
	}
	done := make(chan result, 1)
	go func() { // ends when Recv returns: a reply, or Close on timeout
		m, err := sock.Recv()
		done <- result{m, err}
	}()
	timer := time.NewTimer(c.cfg.Timeout)
	defer timer.Stop()
	select {
	case r := <-done:
		if r.err != nil {
			return nil, fmt.Errorf("receive from %s: %w", ep, r.err)
		}
		if len(r.msg.Frames) == 0 {
			return nil, fmt.Errorf("empty reply from %s", ep)
		}
		return r.msg.Frames[len(r.msg.Frames)-1], nil
	case <-timer.C:
		c.reset()
		<-done
		return nil, fmt.Errorf("%s did not answer within %v", ep, c.cfg.Timeout)
	case <-ctx.Done():
		c.reset()
		<-done
		return nil, ctx.Err()
	}
}

func (c *Client) dial(ctx context.Context) error {
	ep := c.cfg.Endpoints[c.next%len(c.cfg.Endpoints)]
	c.next++
	sock, err := DialSocket(ctx, zmq4.NewReq, ep, c.cfg.DialTimeout)
	if err != nil {
		return err
	}
	c.sock, c.cur = sock, ep
	return nil
}

// reset closes the current socket; the next attempt dials the next endpoint.
func (c *Client) reset() {
	if c.sock != nil {
		c.sock.Close()
		c.sock, c.cur = nil, ""
	}
}

// Close closes the client's socket.
func (c *Client) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.reset()
	return nil
}

// DialSocket creates a socket with newSocket and connects it to ep over
// the guarded transport, giving up after timeout.
func DialSocket(ctx context.Context, newSocket func(context.Context, ...zmq4.Option) zmq4.Socket, ep string, timeout time.Duration, opts ...zmq4.Option) (zmq4.Socket, error) {
	retry := 100 * time.Millisecond
	opts = append([]zmq4.Option{
		zmq4.WithDialerRetry(retry),
		zmq4.WithDialerMaxRetries(max(1, int(timeout/retry))),
		zmq4.WithLogger(quietLogger),
	}, opts...)
	sock := newSocket(ctx, opts...)
	if err := sock.Dial(Endpoint(ep)); err != nil {
		sock.Close()
		return nil, dialError(ep, err)
	}
	return sock, nil
}

// ListenSocket creates a socket with newSocket bound to ep over the guarded
// transport.
func ListenSocket(ctx context.Context, newSocket func(context.Context, ...zmq4.Option) zmq4.Socket, ep string, opts ...zmq4.Option) (zmq4.Socket, error) {
	opts = append([]zmq4.Option{zmq4.WithLogger(quietLogger)}, opts...)
	sock := newSocket(ctx, opts...)
	if err := sock.Listen(Endpoint(ep)); err != nil {
		sock.Close()
		return nil, listenError(ep, err)
	}
	return sock, nil
}
