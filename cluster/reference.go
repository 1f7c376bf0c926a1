package cluster

import (
	"context"
	"maps"
	"slices"
	"strings"
	"time"

	"chat/proto"
	"chat/transport"
)

// The reference registry (roles/reference): a server registers with
// `rank` (sending its advertised endpoint), sends `heartbeat` every
// ReferenceInterval, and asks `list` as often to learn its peers. When the
// reference restarts or has forgotten the server, the heartbeat is
// refused and the server registers again. While the reference is down,
// the server keeps the last list it got, so the cluster goes on electing
// and serving.

// listReply is the reference's answer to `list`.
type listReply struct {
	List []struct {
		Name string `msgpack:"name"`
		Rank int    `msgpack:"rank"`
		Addr string `msgpack:"addr"`
	} `msgpack:"list"`
}

// rankReply is the reference's answer to `rank`.
type rankReply struct {
	Rank int `msgpack:"rank"`
}

// serverMsg is the data of `rank` and `heartbeat`.
type serverMsg struct {
	User string `msgpack:"user"`
	Addr string `msgpack:"addr,omitempty"`
}

// keepRegistered is the registration goroutine.
func (n *Node) keepRegistered() {
	cc := transport.DefaultClientConfig(n.cfg.Reference)
	cc.Timeout, cc.Attempts, cc.DialTimeout = n.cfg.ReferenceTimeout, 1, n.cfg.ReferenceTimeout
	ref, err := transport.NewClient(cc, nil)
	if err != nil {
		n.log.Error("reference client", "err", err)
		return
	}
	defer ref.Close()
	registered, warned := false, false
	do := func(service string, msg any, into any) error {
		ctx, cancel := context.WithTimeout(n.ctx, 2*n.cfg.ReferenceTimeout)
		defer cancel()
		reply, err := n.deps.Key.Exchange(ctx, ref.Do, encodeMsg(service, msg, n.deps.Clock.Now(), n.deps.Lamport.Tick()))
		if err != nil {
			return err
		}
		clk, err := decodeMsg(reply, into)
		n.deps.Lamport.Observe(clk)
		return err
	}
	tick := time.NewTicker(n.cfg.ReferenceInterval)
	defer tick.Stop()
	for {
		var err error
		if !registered {
			var r rankReply
			if err = do("rank", serverMsg{User: n.cfg.Name, Addr: n.cfg.Advertise}, &r); err == nil && r.Rank > 0 {
				registered = true
				n.log.Info("registered with the reference", "my_rank", r.Rank, "reference", n.cfg.Reference, "addr", n.cfg.Advertise)
				// Learn the peers before electing: alone, it would win at once.
				var l listReply
				if lerr := do("list", struct{}{}, &l); lerr == nil {
					n.updatePeers(l)
				}
				n.mu.Lock()
				n.setRankLocked(r.Rank)
				n.mu.Unlock()
			}
		} else if err = do("heartbeat", serverMsg{User: n.cfg.Name, Addr: n.cfg.Advertise}, nil); err != nil {
			n.log.Debug("heartbeat refused", "err", err)
			if strings.Contains(err.Error(), "unknown server") {
				registered = false // the reference forgot us: register again
				continue
			}
		} else {
			n.log.Debug("heartbeat sent to the reference")
		}
		if err == nil {
			var l listReply
			if err = do("list", struct{}{}, &l); err == nil {
				n.updatePeers(l)
			}
		}
		switch {
		case err != nil && !warned:
			n.log.Warn("the reference does not answer; keeping the last peer list", "reference", n.cfg.Reference, "err", err)
			warned = true
		case err == nil && warned:
			n.log.Info("the reference answers again", "reference", n.cfg.Reference)
			warned = false
		}
		select {
		case <-n.ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// updatePeers takes the reference's list of live servers.
func (n *Node) updatePeers(l listReply) {
	alive := make([]peerInfo, 0, len(l.List))
	for _, s := range l.List {
		if proto.ValidName(s.Name, 64) == nil {
			alive = append(alive, peerInfo{Name: s.Name, Rank: s.Rank, Addr: s.Addr})
		}
	}
	slices.SortFunc(alive, func(a, b peerInfo) int { return a.Rank - b.Rank })
	n.mu.Lock()
	defer n.mu.Unlock()
	if slices.Equal(alive, n.alive) {
		return
	}
	n.alive = alive
	known := map[string]peerInfo{}
	for _, p := range n.state.Peers {
		known[p.Name] = p
	}
	for _, p := range alive {
		n.addPeer(p)
		known[p.Name] = p
	}
	st := n.state
	st.Peers = st.Peers[:0:0]
	for _, name := range slices.Sorted(maps.Keys(known)) {
		st.Peers = append(st.Peers, known[name])
	}
	if err := saveState(statePath(n.cfg.DataDir, n.cfg.Name), st); err != nil {
		n.log.Warn("cannot save the cluster state", "err", err)
	} else {
		n.state = st
	}
	names := make([]string, 0, len(alive))
	for _, p := range alive {
		names = append(names, p.Name)
	}
	n.log.Info("peer list from the reference", "alive", strings.Join(names, ","))
	n.setPeersLocked()
	n.afterLocked(time.Now())
}
