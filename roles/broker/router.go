package broker

import (
	"context"
	"encoding/binary"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-zeromq/zmq4"

	"chat/clock"
	"chat/proto"
	"chat/ratelimit"
	"chat/transport"
)

// router moves requests from the front socket to live servers on the back
// socket and replies the other way. Each socket's reader routes what it
// reads itself (no hand-over to another goroutine on the request path);
// run sends heartbeats and takes out silent servers. The table is shared
// under mu.
//
// On the back socket a request travels as [server][seq][client route...][body]
// and its reply comes back as [server][seq][client route...][reply], where
// seq is the broker's 8-byte sequence number. A message of exactly one
// frame after the server identity is a heartbeat (an envelope of service
// "heartbeat"), in both directions.
type router struct {
	cfg         Config
	log         *slog.Logger
	lamport     *clock.Lamport
	front, back zmq4.Socket
	limiter     *ratelimit.Limiter

	mu    sync.Mutex
	table *table
	live  atomic.Pointer[[]string] // snapshot of table.live() for other goroutines
}

func newRouter(cfg Config, log *slog.Logger, lamport *clock.Lamport, front, back zmq4.Socket) *router {
	return &router{cfg: cfg, log: log, lamport: lamport, front: front, back: back,
		table: newTable(cfg.ServerTimeout, cfg.RequestTimeout), limiter: ratelimit.New(cfg.RateLimit)}
}

// run routes until ctx ends. The readers stop when Broker.Close closes
// the sockets.
func (r *router) run(ctx context.Context) {
	var readers sync.WaitGroup
	defer readers.Wait()
	readers.Go(func() { read(ctx, r.front, r.request) })
	readers.Go(func() { read(ctx, r.back, r.fromServer) })

	tick := time.NewTicker(r.cfg.HeartbeatInterval)
	defer tick.Stop()
	heartbeat := proto.Envelope{Service: "heartbeat", Data: proto.Data{}}.Encode()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-tick.C:
			r.mu.Lock()
			live := r.table.live()
			r.mu.Unlock()
			for _, s := range live {
				r.back.Send(zmq4.NewMsgFrom([]byte(s), heartbeat))
			}
			r.expire(now)
		}
	}
}

// read hands every message of sock to handle until ctx ends.
func read(ctx context.Context, sock zmq4.Socket, handle func(zmq4.Msg)) {
	for {
		m, err := sock.Recv()
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			continue // a peer went away
		}
		handle(m)
	}
}

// request hands a client request to the next live server.
func (r *router) request(m zmq4.Msg) {
	req, err := transport.SplitRoute(m.Frames)
	if err != nil {
		return
	}
	now := time.Now()
	if !r.limiter.Allow(string(req.Route[0]), now) {
		r.fail(req.Route, req.Body, false, fmt.Sprintf("rate limit: at most %g requests per second per client; slow down", r.cfg.RateLimit.Rate))
		return
	}
	r.mu.Lock()
	p, ok := r.table.assign(req.Route, req.Body, now)
	r.mu.Unlock()
	if !ok {
		r.fail(req.Route, req.Body, true, "no server is available right now; try again")
		return
	}
	frames := make([][]byte, 0, len(req.Route)+3)
	frames = append(frames, []byte(p.server), seqFrame(p.seq))
	frames = append(frames, req.Route...)
	frames = append(frames, req.Body)
	if err := r.back.Send(zmq4.NewMsgFrom(frames...)); err != nil {
		r.mu.Lock()
		r.table.complete(p.seq)
		r.mu.Unlock()
		r.fail(req.Route, req.Body, true, fmt.Sprintf("server %s could not be reached; try again", p.server))
	}
}

// fromServer handles a heartbeat or a reply from a server.
func (r *router) fromServer(m zmq4.Msg) {
	if len(m.Frames) < 2 {
		return
	}
	server := string(m.Frames[0])
	r.mu.Lock()
	if r.table.heard(server, time.Now()) {
		r.publishLive()
		r.log.Info("server joined", "server", server, "live", len(r.table.live()))
	}
	var p *pending
	ok := false
	if len(m.Frames) >= 4 && len(m.Frames[1]) == 8 { // else a heartbeat (or nothing we sent)
		p, ok = r.table.complete(binary.BigEndian.Uint64(m.Frames[1]))
	}
	r.mu.Unlock()
	if !ok {
		return // answered already with an error: too late
	}
	frames := append(append([][]byte{}, p.route...), m.Frames[len(m.Frames)-1])
	r.front.Send(zmq4.NewMsgFrom(frames...))
}

// expire takes out silent servers and answers the requests they held.
func (r *router) expire(now time.Time) {
	r.mu.Lock()
	gone, lost := r.table.expire(now)
	if len(gone) > 0 {
		r.publishLive()
	}
	live := len(r.table.live())
	r.mu.Unlock()
	for _, s := range gone {
		r.log.Warn("server stopped answering, taken out", "server", s, "live", live)
	}
	for _, p := range lost {
		r.fail(p.route, p.body, true, fmt.Sprintf("server %s did not answer; the request may not have been applied; retry it (with the same request_id)", p.server))
	}
}

// fail answers a request with an error the broker makes itself. With
// retry, the reply carries "retry": true (extension): the request was not
// served and may be sent again at once.
func (r *router) fail(route [][]byte, body []byte, retry bool, why string) {
	service := proto.ErrorService
	if env, err := proto.Decode(body); err == nil {
		service = env.Service
		r.lamport.Observe(env.Data.Clock())
	}
	reply := proto.ErrorReply(service, why)
	if retry {
		reply.Data["retry"] = true
	}
	out := reply.Stamp(time.Now(), r.lamport.Tick()).Encode()
	frames := append(append([][]byte{}, route...), out)
	r.front.Send(zmq4.NewMsgFrom(frames...))
}

func seqFrame(seq uint64) []byte {
	b := make([]byte, 8)
	binary.BigEndian.PutUint64(b, seq)
	return b
}

// publishLive refreshes the snapshot of live servers. r.mu is held.
func (r *router) publishLive() {
	live := r.table.live()
	r.live.Store(&live)
}

// liveServers returns the servers the broker routes to now.
func (r *router) liveServers() []string {
	if p := r.live.Load(); p != nil {
		return *p
	}
	return nil
}
