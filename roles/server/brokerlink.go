package server

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-zeromq/zmq4"

	"chat/proto"
	"chat/transport"
)

// brokerLink keeps the server connected to the broker: a DEALER to the
// broker's back end (routed requests in, replies out, heartbeats both
// ways) and a PUB to the broker's publish-in socket. When the broker falls
// silent for BrokerTimeout, both sockets are closed and dialed again, so a
// restarted broker gets its servers back by itself.
type brokerLink struct {
	cfg  Config
	log  *slog.Logger
	jobs chan<- job
	pubs <-chan proto.Publication
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
	defer func() { // closing the sockets is what unblocks the readers
		cancel(nil)
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

	var lastSeen atomic.Int64
	lastSeen.Store(time.Now().UnixNano())
	if back != nil {
		wg.Go(func() { l.readBack(ctx, cancel, back, &lastSeen) })
	}
	if pub != nil {
		wg.Go(func() { l.publish(ctx, cancel, pub) })
	}

	tick := time.NewTicker(l.cfg.HeartbeatInterval)
	defer tick.Stop()
	suspect := false
	for {
		if back != nil {
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
			hb := proto.Envelope{Service: "heartbeat", Data: proto.Data{"user": l.cfg.Name}}
			if err := back.Send(zmq4.NewMsg(hb.Encode())); err != nil {
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

// readBack reads routed requests and broker heartbeats.
func (l *brokerLink) readBack(ctx context.Context, fail context.CancelCauseFunc, back zmq4.Socket, lastSeen *atomic.Int64) {
	for {
		msg, err := back.Recv()
		if err != nil {
			fail(fmt.Errorf("receive from broker: %w", err))
			return
		}
		lastSeen.Store(time.Now().UnixNano())
		if len(msg.Frames) < 2 {
			continue // a broker heartbeat
		}
		r, err := transport.SplitRoute(msg.Frames)
		if err != nil {
			continue
		}
		select {
		case l.jobs <- job{req: r, reply: back.Send}:
		case <-ctx.Done():
			return
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
			if err := pub.Send(zmq4.NewMsgFrom(p.Frames()...)); err != nil {
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
