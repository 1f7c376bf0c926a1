package broker

import (
	"context"
	"encoding/binary"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/go-zeromq/zmq4"

	"chat/clock"
	"chat/proto"
	"chat/ratelimit"
	"chat/transport"
)

// router moves requests from the front socket to live servers on the back
// socket and replies the other way. One goroutine (run) owns the table;
// two readers feed it.
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
	table       *table
	limiter     *ratelimit.Limiter
	live        atomic.Pointer[[]string] // snapshot of table.live() for other goroutines
}

func newRouter(cfg Config, log *slog.Logger, lamport *clock.Lamport, front, back zmq4.Socket) *router {
	return &router{cfg: cfg, log: log, lamport: lamport, front: front, back: back,
		table: newTable(cfg.ServerTimeout, cfg.RequestTimeout), limiter: ratelimit.New(cfg.RateLimit)}
}

// run routes until ctx ends. The readers stop when the sockets are closed.
func (r *router) run(ctx context.Context) {
	fromFront := make(chan zmq4.Msg, 256)
	fromBack := make(chan zmq4.Msg, 256)
	done := make(chan struct{}, 2)
	go read(ctx, r.front, fromFront, done)
	go read(ctx, r.back, fromBack, done)
	defer func() { <-done; <-done }() // the readers end once Broker.Close closes the sockets

	tick := time.NewTicker(r.cfg.HeartbeatInterval)
	defer tick.Stop()
	heartbeat := proto.Envelope{Service: "heartbeat", Data: proto.Data{}}.Encode()
	for {
		select {
		case <-ctx.Done():
			return
		case m := <-fromFront:
			r.request(m)
		case m := <-fromBack:
			r.fromServer(m)
		case now := <-tick.C:
			for _, s := range r.table.live() {
				r.back.Send(zmq4.NewMsgFrom([]byte(s), heartbeat))
			}
			r.expire(now)
		}
	}
}

// read forwards every message of sock to out until ctx ends.
func read(ctx context.Context, sock zmq4.Socket, out chan<- zmq4.Msg, done chan<- struct{}) {
	defer func() { done <- struct{}{} }()
	for {
		m, err := sock.Recv()
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			continue // a peer went away
		}
		select {
		case out <- m:
		case <-ctx.Done():
			return
		}
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
	p, ok := r.table.assign(req.Route, req.Body, now)
	if !ok {
		r.fail(req.Route, req.Body, true, "no server is available right now; try again")
		return
	}
	frames := make([][]byte, 0, len(req.Route)+3)
	frames = append(frames, []byte(p.server), seqFrame(p.seq))
	frames = append(frames, req.Route...)
	frames = append(frames, req.Body)
	if err := r.back.Send(zmq4.NewMsgFrom(frames...)); err != nil {
		r.table.complete(p.seq)
		r.fail(req.Route, req.Body, true, fmt.Sprintf("server %s could not be reached; try again", p.server))
	}
}

// fromServer handles a heartbeat or a reply from a server.
func (r *router) fromServer(m zmq4.Msg) {
	if len(m.Frames) < 2 {
		return
	}
	server := string(m.Frames[0])
	if r.table.heard(server, time.Now()) {
		r.publishLive()
		r.log.Info("server joined", "server", server, "live", len(r.table.live()))
	}
	if len(m.Frames) < 4 || len(m.Frames[1]) != 8 {
		return // a heartbeat (or nothing we sent)
	}
	p, ok := r.table.complete(binary.BigEndian.Uint64(m.Frames[1]))
	if !ok {
		return // answered already with an error: too late
	}
	frames := append(append([][]byte{}, p.route...), m.Frames[len(m.Frames)-1])
	r.front.Send(zmq4.NewMsgFrom(frames...))
}

// expire takes out silent servers and answers the requests they held.
func (r *router) expire(now time.Time) {
	gone, lost := r.table.expire(now)
	if len(gone) > 0 {
		r.publishLive()
	}
	for _, s := range gone {
		r.log.Warn("server stopped answering, taken out", "server", s, "live", len(r.table.live()))
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

// publishLive refreshes the snapshot of live servers.
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
