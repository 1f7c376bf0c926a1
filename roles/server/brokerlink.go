package server

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-zeromq/zmq4"

	"chat/clusterauth"
	"chat/proto"
	"chat/transport"
)

// brokerLink keeps the server connected to the broker: a DEALER to the
// broker's back end (routed requests in, replies out, heartbeats both
// ways) and a PUB to the broker's publish-in socket. When the broker falls
// silent for BrokerTimeout, both sockets are closed and dialed again, so a
// restarted broker gets its servers back by itself.
//
// When the server stops, leave says goodbye: a last heartbeat with
// "bye": true, after which the broker routes nothing more here and
// answers with a heartbeat with "bye": true. Messages on a connection
// arrive in order, so once that answer is read every request the broker
// sent is queued, and the server serves them all before it closes.
type brokerLink struct {
	cfg     Config
	log     *slog.Logger
	enqueue func(job) bool // false once the server stops taking requests
	intake  *intake
	handler *Handler // for the erro replies of refused requests
	pubs    <-chan proto.Publication
	// leading reports whether this server orders the cluster's writes: its
	// heartbeats say so ("leader": true), and the broker sends it the
	// writes, which other servers would only forward to it. nil: never.
	leading func() bool
	// key, when not nil, is the cluster key: heartbeats go wrapped in an
	// authenticated envelope and publications carry an authenticator
	// frame, as the broker of a keyed cluster requires.
	key *clusterauth.Member

	mu      sync.Mutex
	cur     *linkSession // the session running now (nil: none)
	leaving bool         // leave was called: no goodbye-less reconnect
}

// linkSession is one connection to the broker.
type linkSession struct {
	back  zmq4.Socket
	ended atomic.Bool   // its sockets are closed: its requests cannot be answered
	bye   chan struct{} // closed when the broker acknowledges the goodbye
	once  sync.Once
}

// heartbeat is what the server sends the broker every HeartbeatInterval;
// with bye, its last one.
func (l *brokerLink) heartbeat(bye bool) []byte {
	d := proto.Data{"user": l.cfg.Name}
	if bye {
		d["bye"] = true
	} else if l.leading != nil && l.leading() {
		d["leader"] = true
	}
	hb := proto.Envelope{Service: "heartbeat", Data: d}.Encode()
	if l.key != nil {
		hb, _ = l.key.Wrap(clusterauth.Heartbeat, hb)
	}
	return hb
}

// leave says goodbye to the broker and waits, at most timeout, until it
// acknowledges: from then on it sends nothing more here. Without a
// connection, or if the broker does not know the goodbye (it then takes
// the server out by its heartbeat timeout), leave just returns.
func (l *brokerLink) leave(timeout time.Duration) {
	l.mu.Lock()
	l.leaving = true
	sess := l.cur
	l.mu.Unlock()
	if sess == nil || sess.back == nil || timeout <= 0 {
		return
	}
	if err := sess.back.Send(zmq4.NewMsg(l.heartbeat(true))); err != nil {
		return
	}
	select {
	case <-sess.bye:
		l.log.Info("left the broker")
	case <-time.After(timeout):
		l.log.Warn("the broker did not acknowledge the goodbye", "within", timeout)
	}
}

func (l *brokerLink) isLeaving() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.leaving
}

// run keeps sessions going until ctx ends.
func (l *brokerLink) run(ctx context.Context) {
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		start := time.Now()
		err := l.session(ctx)
		if ctx.Err() != nil {
			return
		}
		if l.isLeaving() {
			// Stopping: a new connection would bring the server back
			// into the broker's rotation. Wait for Close.
			<-ctx.Done()
			return
		}
		if time.Since(start) > l.cfg.BrokerTimeout {
			backoff = 100 * time.Millisecond // it worked for a while: retry quickly
		}
		l.log.Warn("broker link down, reconnecting", "err", err, "in", backoff)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, l.cfg.BrokerTimeout)
	}
}

// session runs one connection to the broker until it fails or ctx ends.
func (l *brokerLink) session(ctx context.Context) error {
	ctx, cancel := context.WithCancelCause(ctx)
	var back, pub zmq4.Socket
	var wg sync.WaitGroup
	sess := &linkSession{bye: make(chan struct{})}
	defer func() { // closing the sockets is what unblocks the readers
		cancel(nil)
		l.mu.Lock()
		if l.cur == sess {
			l.cur = nil
		}
		l.mu.Unlock()
		sess.ended.Store(true) // its queued requests are dropped
		for _, s := range []zmq4.Socket{back, pub} {
			if s != nil {
				s.Close()
			}
		}
		wg.Wait()
	}()
	var err error
	if l.cfg.BrokerBack != "" {
		id := zmq4.WithID(zmq4.SocketIdentity(l.cfg.Name + "-" + randomSuffix()))
		if back, err = transport.DialSocket(ctx, zmq4.NewDealer, l.cfg.BrokerBack, l.cfg.DialTimeout, id); err != nil {
			return err
		}
	}
	if l.cfg.BrokerPub != "" {
		if pub, err = transport.DialSocket(ctx, zmq4.NewPub, l.cfg.BrokerPub, l.cfg.DialTimeout); err != nil {
			return err
		}
	}
	l.log.Info("connected to broker", "back", l.cfg.BrokerBack, "pub", l.cfg.BrokerPub)
	sess.back = back
	l.mu.Lock()
	if l.leaving {
		l.mu.Unlock()
		return errors.New("the server is stopping")
	}
	l.cur = sess
	l.mu.Unlock()

	var lastSeen atomic.Int64
	lastSeen.Store(time.Now().UnixNano())
	if back != nil {
		wg.Go(func() { l.readBack(cancel, sess, &lastSeen) })
	}
	if pub != nil {
		wg.Go(func() { l.publish(ctx, cancel, pub) })
	}

	tick := time.NewTicker(l.cfg.HeartbeatInterval)
	defer tick.Stop()
	suspect := false
	for {
		if back != nil && !l.isLeaving() { // after the goodbye, a heartbeat would take the server back
			// The broker is declared gone only when it is still silent one
			// heartbeat after it first looked silent: a process that was
			// paused (SIGSTOP, a long GC, a VM stall) wakes up with its
			// timer late and the broker's messages still unread; giving
			// up then would leave its old identity behind at the broker.
			if silent := time.Since(time.Unix(0, lastSeen.Load())); silent > l.cfg.BrokerTimeout {
				if suspect {
					return fmt.Errorf("broker silent for %v", silent.Round(time.Millisecond))
				}
				suspect = true
			} else {
				suspect = false
			}
			if err := back.Send(zmq4.NewMsg(l.heartbeat(false))); err != nil {
				return fmt.Errorf("heartbeat to broker: %w", err)
			}
		}
		select {
		case <-ctx.Done():
			return context.Cause(ctx)
		case <-tick.C:
		}
	}
}

// readBack reads routed requests and broker heartbeats. A request is
// [seq][client route…][body]; it counts against the client named by the
// first frame of its route (the client's identity at the broker).
func (l *brokerLink) readBack(fail context.CancelCauseFunc, sess *linkSession, lastSeen *atomic.Int64) {
	back := sess.back
	for {
		msg, err := back.Recv()
		if err != nil {
			fail(fmt.Errorf("receive from broker: %w", err))
			return
		}
		lastSeen.Store(time.Now().UnixNano())
		if len(msg.Frames) < 2 { // a broker heartbeat; with bye, the answer to ours
			if len(msg.Frames) == 1 {
				if env, err := proto.Decode(msg.Frames[0]); err == nil && env.Data["bye"] == true {
					sess.once.Do(func() { close(sess.bye) })
				}
			}
			continue
		}
		r, err := transport.SplitRoute(msg.Frames)
		if err != nil {
			continue
		}
		client := ""
		if len(r.Route) >= 2 {
			client = "broker\x00" + string(r.Route[1])
		}
		if lim := l.cfg.Limits.MaxRequest; lim > 0 && len(r.Body) > lim {
			reply, _ := l.handler.Handle(context.Background(), r.Body) // too large: answered now, never queued
			back.Send(r.Reply(reply))
			continue
		}
		if !l.intake.take(client) {
			back.Send(r.Reply(l.handler.Refuse(r.Body, tooMany(l.cfg.MaxQueuedPerClient))))
			continue
		}
		// Waits while the workers are all busy (the broker then holds
		// the rest); the session ending meanwhile drops the request
		// before it is served (sess.ended).
		if !l.enqueue(job{req: r, reply: back.Send, client: client, gone: sess.ended.Load}) {
			l.intake.done(client)
			back.Send(r.Reply(refuseRetry(l.handler, r.Body, stopping)))
		}
	}
}

// publish forwards publications to the broker's proxy.
func (l *brokerLink) publish(ctx context.Context, fail context.CancelCauseFunc, pub zmq4.Socket) {
	for {
		select {
		case <-ctx.Done():
			return
		case p := <-l.pubs:
			frames := p.Frames()
			if l.key != nil {
				frames = append(frames, l.key.SealFrames(clusterauth.Publish, frames))
			}
			if err := pub.Send(zmq4.NewMsgFrom(frames...)); err != nil {
				fail(fmt.Errorf("publish to broker: %w", err))
				return
			}
		}
	}
}

func randomSuffix() string {
	b := make([]byte, 4)
	rand.Read(b)
	return hex.EncodeToString(b)
}
