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
// restarted broker gets its servers back by itself. Publications lost by
// the PUB would be lost for every subscriber: publish holds them until
// the broker's subscription has reached the PUB (see there).
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
	// unsent is a publication taken from pubs that its session could not
	// send (the connection was lost): the next session sends it first.
	// Only the publish goroutine uses it (one session at a time).
	unsent *proto.Publication
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

// pubConn returns the connection of the current session's PUB (nil:
// none), for tests.
func (l *brokerLink) pubConn() *zmq4.Conn {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.cur == nil {
		return nil
	}
	return l.cur.pub.conn.Load()
}

// pubWatch is the PUB's security mechanism: NULL, as zmq4's own (the same
// bytes), and it keeps the connection it opens, so that the link can tell
// when that connection is gone (zmq4 says nothing of a PUB's peers).
type pubWatch struct {
	transport.NullMechanism
	conn atomic.Pointer[zmq4.Conn]
}

// Handshake is zmq4's NULL handshake, then records conn.
func (w *pubWatch) Handshake(conn *zmq4.Conn, server bool) error {
	if err := transport.NullHandshake(conn); err != nil {
		return err
	}
	w.conn.Store(conn)
	return nil
}

// lost reports that the connection was made and has closed since. A PUB
// is connected to one endpoint and zmq4 does not reconnect it: once its
// connection is closed, everything it is given is dropped.
func (w *pubWatch) lost() bool {
	c := w.conn.Load()
	return c != nil && c.Closed()
}

// linkSession is one connection to the broker.
type linkSession struct {
	back  zmq4.Socket
	pub   pubWatch
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
		if pub, err = transport.DialSocket(ctx, zmq4.NewPub, l.cfg.BrokerPub, l.cfg.DialTimeout, zmq4.WithSecurity(&sess.pub)); err != nil {
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
		wg.Go(func() { l.publish(ctx, cancel, pub, &sess.pub) })
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

// errPubLost ends a session whose PUB has lost its connection.
var errPubLost = errors.New("the connection to the broker's publish-in was lost")

// publish forwards publications to the broker's publish-in, and gives none
// of them to a PUB that would drop it. A ZeroMQ PUB sends a publication
// to the peers whose subscription it has received, and to no one else:
//
//   - A fresh connection has no subscription yet. Our broker's publish-in
//     subscribes to everything as soon as a publisher connects, but the
//     subscription reaches the PUB a moment after the connection is up
//     (ZeroMQ's "slow joiner"), and what was sent in that moment, first
//     of all what queued while the broker was away, was lost for every
//     subscriber. So nothing is sent until the broker's subscription has
//     arrived (awaitSubscription); meanwhile publications wait in the
//     queue, as while the broker is away (Config.PublishQueue).
//   - A lost connection (the broker stopped) drops everything until the
//     link notices, which took until BrokerTimeout, or forever when only
//     the publish-in connection was lost. So before each publication the
//     connection is checked (pubWatch); once it is gone, the publication
//     is kept for the next session (l.unsent) and the session ends at
//     once, to connect again.
//
// Holding back is chosen over replaying recent publications after a
// reconnect: subscribers would get some twice, and only our client drops
// the ids it has shown already; the standard's clients would show them
// twice. Left over: a publication sent in the instant between the
// broker's end and the server reading that end goes into the closed
// connection. No subscriber can be on a new broker yet then, and history
// has it (our client fetches what it missed when it reconnects).
func (l *brokerLink) publish(ctx context.Context, fail context.CancelCauseFunc, pub zmq4.Socket, conn *pubWatch) {
	if err := l.awaitSubscription(ctx, pub, conn); err != nil {
		fail(err)
		return
	}
	for {
		if l.unsent == nil {
			select {
			case <-ctx.Done():
				return
			case p := <-l.pubs:
				l.unsent = &p
			}
		}
		if ctx.Err() != nil { // the session is ending: its sockets are being closed
			return // l.unsent goes out first on the next connection
		}
		if conn.lost() {
			fail(errPubLost) // as above
			return
		}
		frames := l.unsent.Frames()
		if l.key != nil {
			frames = append(frames, l.key.SealFrames(clusterauth.Publish, frames))
		}
		if err := pub.Send(zmq4.NewMsgFrom(frames...)); err != nil {
			fail(fmt.Errorf("publish to broker: %w", err))
			return
		}
		l.unsent = nil
	}
}

// awaitSubscription returns once the broker's publish-in has subscribed
// to the PUB's publications: its subscription is among the PUB's topics
// (Topics: what its peer sent it). zmq4 signals no subscription, so it is
// looked for every BrokerSubscribeCheck. A broker that sends none within
// BrokerSubscribeTimeout is published to anyway: a standard XSUB/XPUB
// proxy forwards only its subscribers' subscriptions, and with no
// subscriber there is no one to lose a publication.
func (l *brokerLink) awaitSubscription(ctx context.Context, pub zmq4.Socket, conn *pubWatch) error {
	topics, ok := pub.(zmq4.Topics)
	if !ok {
		return nil
	}
	deadline := time.NewTimer(l.cfg.BrokerSubscribeTimeout)
	defer deadline.Stop()
	check := time.NewTicker(l.cfg.BrokerSubscribeCheck)
	defer check.Stop()
	for len(topics.Topics()) == 0 {
		if conn.lost() {
			return errPubLost
		}
		select {
		case <-ctx.Done():
			return context.Cause(ctx)
		case <-deadline.C:
			l.log.Info("the broker's publish-in has not subscribed to this server's publications; publishing anyway",
				"within", l.cfg.BrokerSubscribeTimeout, "pub", l.cfg.BrokerPub)
			return nil
		case <-check.C:
		}
	}
	return nil
}

func randomSuffix() string {
	b := make([]byte, 4)
	rand.Read(b)
	return hex.EncodeToString(b)
}
