package cluster

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/go-zeromq/zmq4"

	"chat/election"
	"chat/proto"
	"chat/replication"
	"chat/transport"
)

// MembersOnly reports whether service is one that, with a cluster key,
// only members that prove it may ask: the cluster's own (IsService) and
// forward.
func MembersOnly(service string) bool {
	return IsService(service) || service == ServiceForward
}

// IsService reports whether service is one of the cluster's own (server
// to server, and status), which Serve answers.
func IsService(service string) bool {
	switch service {
	case ServiceClock, ServiceAdjust, ServiceElection, ServiceCoordinator, ServicePing, ServiceStatus,
		replication.ServicePrepare, replication.ServiceAppend, replication.ServiceFetch, replication.ServiceCommit:
		return true
	}
	return false
}

// maxAdjustment bounds an `adjust` this server accepts: a larger one is
// a bug or an attack, not clock drift.
const maxAdjustment = 24 * time.Hour

// Serve answers one of the cluster's requests (IsService). It returns the
// reply frame.
func (n *Node) Serve(ctx context.Context, service string, frame []byte) []byte {
	reply, err := n.serve(service, frame)
	if err != nil {
		return proto.ErrorReply(service, err.Error()).Stamp(n.deps.Clock.Now(), n.deps.Lamport.Tick()).Encode()
	}
	return encodeMsg(service, reply, n.deps.Clock.Now(), n.deps.Lamport.Tick())
}

func (n *Node) serve(service string, frame []byte) (any, error) {
	now := time.Now()
	observe := func(v any) error {
		clk, err := decodeMsg(frame, v)
		n.deps.Lamport.Observe(clk)
		return err
	}
	switch service {
	case ServiceClock:
		if err := observe(nil); err != nil {
			return nil, err
		}
		t := n.deps.Clock.Now()
		return struct {
			Time   float64 `msgpack:"time"`
			TimeMs int64   `msgpack:"time_ms"`
		}{float64(t.UnixMicro()) / 1e6, t.UnixMilli()}, nil
	case ServiceAdjust:
		var m adjustMsg
		if err := observe(&m); err != nil {
			return nil, err
		}
		secs := m.Adjustment
		if m.AdjustmentMs != 0 {
			secs = m.AdjustmentMs / 1e3
		}
		d := time.Duration(secs * float64(time.Second))
		if !finite(secs) || math.Abs(secs) > maxAdjustment.Seconds() {
			return nil, fmt.Errorf("adjustment %v s refused: at most %v either way", secs, maxAdjustment)
		}
		total := n.deps.Clock.Adjust(d)
		n.log.Info("clock adjusted (Berkeley)", "adjust_ms", ms(d), "offset_ms", ms(total))
		return okReply{Status: proto.StatusOK}, nil
	case ServicePing:
		if err := observe(nil); err != nil {
			return nil, err
		}
		return okReply{Status: proto.StatusOK}, nil
	case ServiceStatus:
		if err := observe(nil); err != nil {
			return nil, err
		}
		return n.Status(), nil
	case replication.ServiceCommit:
		if err := observe(nil); err != nil {
			return nil, err
		}
		ctx, cancel := context.WithTimeout(n.ctx, n.cfg.ReadTimeout)
		defer cancel()
		n.mu.Lock()
		epoch, leading := n.repl.Epoch(), n.repl.Role() == replication.Leader
		n.mu.Unlock()
		if !leading {
			return replication.CommitReply{From: n.cfg.Name, Epoch: epoch}, nil
		}
		commit, err := n.readIndex(ctx)
		return replication.CommitReply{From: n.cfg.Name, OK: err == nil, Epoch: epoch, Commit: commit}, nil
	case ServiceElection, ServiceCoordinator:
		var m electionMsg
		if err := observe(&m); err != nil {
			return nil, err
		}
		n.mu.Lock()
		abstaining := n.abstaining()
		n.mu.Unlock()
		if abstaining && service == ServiceElection {
			// No OK: the asker must not wait for this server to lead.
			return nil, errors.New("this server is copying back what its damaged store lost: it takes no part in elections yet")
		}
		n.stepElection(service, m, now)
		if service == ServiceElection {
			return struct {
				Election string `msgpack:"election"`
			}{"OK"}, nil
		}
		return okReply{Status: proto.StatusOK}, nil
	}

	// The replication requests: each is decoded before mu is taken (the
	// machine needs it, msgpack does not, and an Append's entries take a
	// while), then handled with the machines' follow-up.
	switch service {
	case replication.ServicePrepare:
		var m replication.Prepare
		if err := observe(&m); err != nil {
			return nil, err
		}
		n.mu.Lock()
		defer n.mu.Unlock()
		defer n.afterLocked(now)
		r := n.repl.HandlePrepare(m)
		if r.OK {
			n.log.Info("promised an epoch", "epoch", m.Epoch, "to", m.Leader)
		}
		return r, nil
	case replication.ServiceAppend:
		var m replication.Append
		if err := observe(&m); err != nil {
			return nil, err
		}
		n.mu.Lock()
		defer n.mu.Unlock()
		defer n.afterLocked(now)
		if n.bully != nil {
			n.bully.Heard(m.Leader, now)
		}
		before := n.repl.Err()
		r := n.repl.HandleAppend(m)
		if err := n.repl.Err(); err != nil && err != before {
			n.log.Error("replication: cannot append", "err", err)
		}
		return r, nil
	case replication.ServiceFetch:
		var m replication.Fetch
		if err := observe(&m); err != nil {
			return nil, err
		}
		n.mu.Lock()
		defer n.mu.Unlock()
		defer n.afterLocked(now)
		return n.repl.HandleFetch(m), nil
	}
	return nil, fmt.Errorf("unknown service %q", service)
}

// okReply is the data of a plain OK.
type okReply struct {
	Status string `msgpack:"status"`
}

// stepElection feeds an election request or an announcement to Bully.
func (n *Node) stepElection(service string, m electionMsg, now time.Time) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.bully == nil {
		return
	}
	from := m.User
	if service == ServiceCoordinator || m.Coordinator != "" {
		from = m.Coordinator
	}
	rank := m.Rank
	if rank == 0 {
		rank = n.rankOf(from)
	}
	kind := election.Election
	if service == ServiceCoordinator {
		kind = election.Coordinator
		if _, known := n.peers[from]; !known {
			// Not a server the reference ever listed to us (a stray from
			// another cluster on the same broker, or one that has only
			// just registered: it announces again in a moment).
			n.log.Debug("announcement from an unknown server ignored", "from", from)
			return
		}
	}
	if from != "" {
		n.bully.Heard(from, now)
	}
	n.bully.Step(election.Message{Kind: kind, From: from, Rank: rank, To: n.cfg.Name}, now)
	n.afterLocked(now)
}

// listenAnnouncements subscribes to topic "servers" on the broker's
// publish-out and feeds every coordinator announcement to Bully; the
// coordinator also sends them directly, so this is the standard's path
// (other implementations announce only there).
func (n *Node) listenAnnouncements() {
	for n.ctx.Err() == nil {
		sub, err := transport.DialSocket(n.ctx, zmq4.NewSub, n.cfg.BrokerSub, n.cfg.PeerTimeout)
		if err == nil {
			err = sub.SetOption(zmq4.OptionSubscribe, "servers")
		}
		if err == nil {
			n.readAnnouncements(sub) // closes sub
		} else if sub != nil {
			sub.Close()
		}
		select {
		case <-n.ctx.Done():
			return
		case <-time.After(n.cfg.SubReconnect):
		}
	}
}

// readAnnouncements reads from one subscriber socket until it fails,
// then closes it.
func (n *Node) readAnnouncements(sub zmq4.Socket) {
	stop := context.AfterFunc(n.ctx, func() { sub.Close() })
	defer func() {
		if stop() {
			sub.Close()
		}
	}()
	for {
		msg, err := sub.Recv()
		if err != nil {
			return
		}
		if len(msg.Frames) != 2 || string(msg.Frames[0]) != "servers" {
			continue
		}
		var m electionMsg
		if clk, err := decodeMsg(msg.Frames[1], &m); err == nil && m.Coordinator != "" {
			n.deps.Lamport.Observe(clk)
			n.stepElection(ServiceCoordinator, m, time.Now())
		}
	}
}
