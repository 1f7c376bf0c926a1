package broker

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-zeromq/zmq4"

	"chat/clock"
	"chat/clusterauth"
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
// On the back socket a request travels to one of our servers (a DEALER)
// as [server][seq][client route...][body] and its reply comes back as
// [server][seq][client route...][reply], where seq is the broker's 8-byte
// sequence number. A message of exactly one frame after the server
// identity is a heartbeat (an envelope of service "heartbeat"), in both
// directions; a server's last heartbeat, when it stops, carries "bye":
// true, and the broker answers it with a heartbeat with "bye": true once
// it routes nothing more there. A standard server (a REP socket, no
// heartbeats) gets [server][seq][""][body], REP's own framing with seq as
// the envelope it echoes, and answers [server][seq][""][reply].
type router struct {
	cfg         Config
	log         *slog.Logger
	lamport     *clock.Lamport
	front, back zmq4.Socket
	peers       *backPeers
	limiter     *ratelimit.Limiter
	// key, when not nil, is the cluster key: a server joins only with a
	// heartbeat that proves it (wrapped, clusterauth.Heartbeat), and what
	// others send on the back end is refused and logged through refused.
	key     *clusterauth.Member
	refused *clusterauth.Refusals

	// order is held from assigning a request to sending it, and from
	// taking a goodbye to acknowledging it, so the acknowledgement comes
	// after every request routed to that server.
	order sync.Mutex
	mu    sync.Mutex
	table *table
	live  atomic.Pointer[[]string] // snapshot of table.live() for other goroutines
}

func newRouter(cfg Config, log *slog.Logger, lamport *clock.Lamport, front, back zmq4.Socket, peers *backPeers) *router {
	t := newTable(cfg.ServerTimeout, cfg.RequestTimeout)
	t.grace = cfg.PeerCheckInterval
	return &router{cfg: cfg, log: log, lamport: lamport, front: front, back: back, peers: peers,
		table: t, limiter: ratelimit.New(cfg.RateLimit)}
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
	check := time.NewTicker(r.cfg.PeerCheckInterval)
	defer check.Stop()
	heartbeat := proto.Envelope{Service: "heartbeat", Data: proto.Data{}}.Encode()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			r.mu.Lock()
			targets := r.table.heartbeatTargets()
			r.mu.Unlock()
			for _, s := range targets {
				r.back.Send(zmq4.NewMsgFrom([]byte(s), heartbeat))
			}
		case now := <-check.C:
			r.checkPeers(now)
			r.expire(now)
		}
	}
}

// checkPeers takes the back end's connections that came up or went down
// into the table: a REP server joins, a server whose connection closed is
// taken out at once.
func (r *router) checkPeers(now time.Time) {
	if r.peers == nil {
		return
	}
	events := r.peers.check(now, r.cfg.PeerCheckInterval)
	if len(events) == 0 {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	changed := false
	for _, e := range events {
		switch {
		case e.up && r.key != nil && e.c.socketType == "REP":
			// A REP never sends first, so it cannot prove the key.
			r.refused.Refused("a REP server on the back end", errors.New("a REP server sends no heartbeat"), "server", showID(e.c.id))
		case e.up && r.table.connected(e.c.id, e.c.socketType, e.c.gen, now):
			changed = true
			r.log.Info("server joined", "server", showID(e.c.id), "socket", e.c.socketType, "live", len(r.table.ring))
		case !e.up && r.table.disconnected(e.c.id, e.c.gen, now):
			changed = true
			r.log.Info("server disconnected, taken out", "server", showID(e.c.id), "live", len(r.table.ring))
		}
	}
	if changed {
		r.publishLive()
	}
}

// read hands every message of sock to handle until ctx ends.
func read(ctx context.Context, sock zmq4.Socket, handle func(zmq4.Msg)) {
	for {
		m, err := sock.Recv()
		if ctx.Err() != nil {
			transport.DrainClosed(sock)
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
	r.order.Lock()
	defer r.order.Unlock()
	r.mu.Lock()
	p, ok := r.table.assign(req.Route, req.Body, now)
	r.mu.Unlock()
	if !ok {
		r.fail(req.Route, req.Body, true, "no server is available right now; try again")
		return
	}
	frames := make([][]byte, 0, len(req.Route)+3)
	frames = append(frames, []byte(p.server), seqFrame(p.seq))
	if p.rep {
		frames = append(frames, nil) // REP: the envelope ends at the empty frame
	} else {
		frames = append(frames, req.Route...)
	}
	frames = append(frames, req.Body)
	if err := r.back.Send(zmq4.NewMsgFrom(frames...)); err != nil {
		r.mu.Lock()
		r.table.complete(p.seq)
		r.mu.Unlock()
		r.fail(req.Route, req.Body, true, fmt.Sprintf("server %s could not be reached; try again", showID(p.server)))
	}
}

// fromServer handles a heartbeat or a reply from a server.
func (r *router) fromServer(m zmq4.Msg) {
	if len(m.Frames) < 2 {
		return
	}
	server := string(m.Frames[0])
	now := time.Now()
	r.mu.Lock()
	if len(m.Frames) == 2 && !r.table.isREP(server) {
		r.mu.Unlock()
		body := m.Frames[1]
		if r.key != nil {
			var err error
			if body, _, err = r.key.Unwrap(clusterauth.Heartbeat, body); err != nil {
				r.refused.Refused("a heartbeat on the back end", err, "server", showID(server))
				return
			}
		}
		r.heartbeat(server, body)
		return
	}
	if r.key != nil && !r.table.known(server) {
		// Only a proven heartbeat makes a server known: a reply from
		// anyone else answers no request.
		r.mu.Unlock()
		r.refused.Refused("a message on the back end", errors.New("its sender never sent an authenticated heartbeat"), "server", showID(server))
		return
	}
	joined, _ := r.table.heard(server, "", false, now)
	if joined {
		r.publishLive()
		r.log.Info("server back", "server", showID(server), "live", len(r.table.ring))
	}
	var p *pending
	ok := false
	switch {
	case len(m.Frames) >= 4 && len(m.Frames[1]) == 8:
		p, ok = r.table.complete(binary.BigEndian.Uint64(m.Frames[1]))
	case r.table.isREP(server): // a REP that lost the envelope answers in order
		p, ok = r.table.completeOldest(server)
	}
	r.mu.Unlock()
	if !ok {
		return // answered already with an error: too late
	}
	frames := append(append([][]byte{}, p.route...), m.Frames[len(m.Frames)-1])
	r.front.Send(zmq4.NewMsgFrom(frames...))
}

// heartbeat handles a server's heartbeat: a sign of life, or, with "bye":
// true, its goodbye, which is acknowledged once nothing more is routed
// there.
func (r *router) heartbeat(server string, body []byte) {
	var name string
	bye, leader := false, false
	if env, err := proto.Decode(body); err == nil {
		name, _, _ = env.Data.String("", "user")
		bye = env.Data["bye"] == true
		leader = env.Data["leader"] == true
	}
	now := time.Now()
	if bye {
		r.order.Lock()
		defer r.order.Unlock()
	}
	r.mu.Lock()
	var joined bool
	var replaced []string
	if !bye {
		joined, replaced = r.table.heard(server, name, true, now)
	}
	r.table.leads(server, leader && !bye)
	left := bye && r.table.bye(server, now)
	if joined || left || len(replaced) > 0 {
		r.publishLive()
	}
	live := len(r.table.ring)
	r.mu.Unlock()
	for _, old := range replaced {
		r.log.Info("server reconnected, its old connection taken out", "server", showID(old), "new", showID(server))
	}
	if joined {
		r.log.Info("server joined", "server", showID(server), "live", live)
	}
	if bye {
		if left {
			r.log.Info("server said goodbye, taken out", "server", showID(server), "live", live)
		}
		ack := proto.Envelope{Service: "heartbeat", Data: proto.Data{"bye": true}}.Encode()
		r.back.Send(zmq4.NewMsgFrom([]byte(server), ack))
	}
}

// expire takes out silent servers and answers the requests they held.
func (r *router) expire(now time.Time) {
	r.mu.Lock()
	gone, back, lost := r.table.expire(now)
	if len(gone) > 0 || len(back) > 0 {
		r.publishLive()
	}
	live := len(r.table.ring)
	r.mu.Unlock()
	for _, s := range gone {
		r.log.Warn("server stopped answering, taken out", "server", showID(s), "live", live)
	}
	for _, s := range back {
		r.log.Info("server tried again", "server", showID(s), "live", live)
	}
	for _, p := range lost {
		r.fail(p.route, p.body, true, fmt.Sprintf("server %s did not answer; the request may not have been applied; retry it (with the same request_id)", showID(p.server)))
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

// showID is a server's identity as logs and error texts show it: as it is
// when printable (ours: name-8 hex digits), else in hex (the identities
// the transport makes up for peers that bring none, like a REP).
func showID(id string) string {
	for _, c := range []byte(id) {
		if c < 0x21 || c > 0x7e {
			return fmt.Sprintf("0x%x", id)
		}
	}
	return id
}
