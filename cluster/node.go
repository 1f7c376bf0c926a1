package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"chat/clock"
	"chat/clusterauth"
	"chat/election"
	"chat/logging"
	"chat/proto"
	"chat/replication"
	"chat/store"
	"chat/transport"
)

// ErrRetry marks an error after which the client should retry its
// request (with the same request_id): the cluster is electing, catching
// up, or the coordinator could not be reached.
var ErrRetry = errors.New("retry")

// retryf returns an error wrapping ErrRetry.
func retryf(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrRetry, fmt.Sprintf(format, args...))
}

// PeerIdentity starts the ZeroMQ identity of every server's client to
// another server, so that a server can tell its peers' traffic from its
// clients' (peers are not rate-limited). It is no proof of membership:
// with a cluster key, a peer's requests also carry the key's
// authenticator (Deps.Key), and only those skip the limits.
const PeerIdentity = "chat-peer:"

// Deps are what a Node uses of its server.
type Deps struct {
	Store   *store.Store
	Lamport *clock.Lamport
	Clock   *clock.Physical
	// Publish sends a publication to the broker (announcements on
	// "servers"); nil publishes nothing.
	Publish func(proto.Publication)
	Log     *slog.Logger
	// Key is the cluster key: every request to the reference and to other
	// servers is authenticated with it, and every reply must be (see
	// clusterauth.Member.Exchange). nil: the cluster runs open.
	Key *clusterauth.Member
}

// peer is another server: its rank, its endpoint and a request client to it.
type peer struct {
	info   peerInfo
	client *transport.Peer // cluster messages, PeerTimeout each
	slow   *transport.Peer // forwarded writes and commit requests, which wait for replication
	// foreign is set when the peer answered our `ping` with an error: a
	// server of another implementation of the standard, which takes no part
	// in our election and replication (it would never replicate).
	foreign  bool
	pingedOK bool // it answered a ping: one of ours
}

// Node is a server's part in the cluster. Its methods are safe for
// concurrent use.
type Node struct {
	cfg  Config
	deps Deps
	log  *slog.Logger

	mu       sync.Mutex // guards everything below, and the two machines
	state    state      // what is kept in the state file
	peers    map[string]*peer
	alive    []peerInfo        // the reference's last list (the election's peers)
	bully    *election.Machine // nil until this server knows its rank
	repl     *replication.Node
	leading  bool         // the election says this server is the coordinator
	lastSync time.Time    // start of the last Berkeley round
	syncing  bool         // a Berkeley round is under way
	requests atomic.Int64 // requests handled since the last Berkeley round

	commitMu sync.Mutex
	commitCh chan struct{} // closed and replaced when the commit LSN grows or the role changes
	woken    commitView    // what commitCh was last closed for (under mu)
	readers  atomic.Int32  // readIndex calls waiting: they also wait for acknowledgements

	// For the log lines (read without mu).
	rank        atomic.Int64
	coordinator atomic.Pointer[string]

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// Start starts the server's part in the cluster: registration, election,
// clock sync and replication. Close stops it.
func Start(ctx context.Context, cfg Config, deps Deps) (*Node, error) {
	if cfg.Reference == "" {
		cfg.Replicas = 1
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	st, err := loadState(statePath(cfg.DataDir, cfg.Name))
	if err != nil {
		return nil, err
	}
	if deps.Log == nil {
		deps.Log = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(ctx)
	n := &Node{cfg: cfg, deps: deps, state: st, peers: map[string]*peer{}, commitCh: make(chan struct{}), ctx: ctx, cancel: cancel}
	empty := ""
	n.coordinator.Store(&empty)
	n.log = slog.New(logging.Dynamic(deps.Log.Handler(), func() []slog.Attr {
		return []slog.Attr{slog.Int64("rank", n.rank.Load()), slog.String("coordinator", *n.coordinator.Load())}
	}))
	rcfg := cfg.Replication
	rcfg.Self, rcfg.Replicas = cfg.Name, cfg.Replicas
	n.repl = replication.New(rcfg, storeLog{st: deps.Store, lamport: deps.Lamport, save: n.savePromise}, st.Promise)
	if cfg.AbstainUntil > 0 {
		n.repl.Abstain(cfg.AbstainUntil)
		n.log.Warn("repaired store: taking part in no election until the log is back", "until_lsn", cfg.AbstainUntil)
	}

	n.mu.Lock()
	for _, p := range st.Peers {
		n.addPeer(p)
	}
	n.alive = slices.Clone(st.Peers)
	n.setPeersLocked()
	switch {
	case cfg.Reference == "":
		n.setRankLocked(1) // alone: rank 1 of 1
	case st.Rank > 0:
		n.setRankLocked(st.Rank) // known from the last run: elect even while the reference is down
	}
	n.mu.Unlock()

	n.wg.Go(n.run)
	n.wg.Go(n.watchLog)
	if cfg.Reference != "" {
		n.wg.Go(n.keepRegistered)
	}
	if cfg.BrokerSub != "" && cfg.Reference != "" {
		n.wg.Go(n.listenAnnouncements)
	}
	return n, nil
}

// Logger returns the server's logger with every line also stamped with
// this server's rank and the coordinator it follows.
func (n *Node) Logger() *slog.Logger { return n.log }

// Close stops every goroutine of the node and waits for them.
func (n *Node) Close() error {
	n.cancel()
	n.wg.Wait()
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, p := range n.peers {
		p.client.Close()
		p.slow.Close()
	}
	return nil
}

// savePromise is the replication log's SavePromise: the state file.
// Called with mu held (from inside the replication machine).
func (n *Node) savePromise(p replication.Promise) error {
	st := n.state
	st.Promise = p
	if err := saveState(statePath(n.cfg.DataDir, n.cfg.Name), st); err != nil {
		return err
	}
	n.state = st
	return nil
}

// setRankLocked gives the server its rank and starts its election
// machine (or updates it). mu must be held.
func (n *Node) setRankLocked(rank int) {
	if n.state.Rank != rank {
		st := n.state
		st.Rank = rank
		if err := saveState(statePath(n.cfg.DataDir, n.cfg.Name), st); err != nil {
			n.log.Error("cannot save the cluster state", "err", err)
		}
		n.state = st
	}
	n.rank.Store(int64(rank))
	if n.bully != nil && n.bullyRank() == rank {
		return
	}
	if n.abstaining() {
		return // no election until the repaired store is back (run starts it)
	}
	ecfg := n.cfg.Election
	ecfg.Self, ecfg.Rank = n.cfg.Name, rank
	now := time.Now()
	n.bully = election.New(ecfg, now)
	n.bully.SetPeers(n.electionPeers(), now)
	n.log.Info("starting an election")
	n.bully.Start(now)
	n.afterLocked(now)
}

// abstaining reports whether this server still copies back what its
// repaired store lost (Config.AbstainUntil): until then it runs no
// election and answers none, so it cannot win one it could not lead.
func (n *Node) abstaining() bool {
	if n.cfg.AbstainUntil == 0 {
		return false
	}
	if lsn, _ := n.deps.Store.Last(); lsn >= n.cfg.AbstainUntil {
		n.cfg.AbstainUntil = 0
		return false
	}
	return true
}

// bullyRank is the rank the election machine was made with.
func (n *Node) bullyRank() int { return int(n.rank.Load()) }

// electionPeers is the reference's live list as the election sees it:
// our servers only (foreign ones would win elections and never lead
// replication). mu must be held.
func (n *Node) electionPeers() []election.Peer {
	var out []election.Peer
	for _, p := range n.alive {
		if p.Name != n.cfg.Name && !n.isForeign(p.Name) {
			out = append(out, election.Peer{Name: p.Name, Rank: p.Rank})
		}
	}
	return out
}

// isForeign reports whether name is a server of another implementation.
// mu must be held.
func (n *Node) isForeign(name string) bool {
	p, ok := n.peers[name]
	return ok && p.foreign
}

// addPeer records a server and makes (or remakes) its request client.
// mu must be held.
func (n *Node) addPeer(info peerInfo) {
	if info.Name == n.cfg.Name || info.Addr == "" {
		return
	}
	if p, ok := n.peers[info.Name]; ok {
		if p.info.Addr == info.Addr {
			p.info.Rank = info.Rank
			return
		}
		p.client.Close()
		p.slow.Close()
	}
	pc := transport.DefaultPeerConfig(info.Addr)
	pc.Timeout, pc.DialTimeout = n.cfg.PeerTimeout, n.cfg.PeerTimeout
	pc.Identity = PeerIdentity + n.cfg.Name
	client, err := transport.NewPeer(pc, n.deps.Log)
	if err != nil {
		n.log.Warn("peer has an unusable address", "peer", info.Name, "addr", info.Addr, "err", err)
		return
	}
	pc.Timeout = max(n.cfg.ForwardTimeout, n.cfg.ReadTimeout)
	pc.Identity = PeerIdentity + n.cfg.Name + "/slow"
	slow, err := transport.NewPeer(pc, n.deps.Log)
	if err != nil {
		client.Close()
		return
	}
	n.peers[info.Name] = &peer{info: info, client: client, slow: slow}
}

// setPeersLocked tells the machines who the other servers are:
// replication counts every server ever listed (a dead one still counts
// towards the majority), the election only the live ones.
func (n *Node) setPeersLocked() {
	names := make([]string, 0, len(n.peers))
	for name, p := range n.peers {
		if !p.foreign {
			names = append(names, name)
		}
	}
	n.repl.SetPeers(names)
	if n.bully != nil {
		n.bully.SetPeers(n.electionPeers(), time.Now())
	}
}

// run ticks the machines and sends liveness checks until Close.
func (n *Node) run() {
	tick := time.NewTicker(n.cfg.TickInterval)
	defer tick.Stop()
	lastPing := time.Time{}
	for {
		select {
		case <-n.ctx.Done():
			return
		case now := <-tick.C:
			n.mu.Lock()
			if n.bully == nil && n.state.Rank > 0 && !n.abstaining() {
				n.log.Info("the repaired store is back: taking part in elections again")
				n.setRankLocked(n.state.Rank)
			}
			if n.bully != nil {
				n.bully.Tick(now)
			}
			n.repl.Tick(now)
			if now.Sub(lastPing) >= n.cfg.PingInterval {
				lastPing = now
				n.pingPeersLocked()
			}
			n.afterLocked(now)
			berkeley := n.berkeleyDueLocked(now, false)
			n.mu.Unlock()
			if berkeley {
				n.wg.Go(n.syncClocks)
			}
		}
	}
}

// watchLog tells the replication machine each time the store's log grows
// (a leader then sends the new entries on).
func (n *Node) watchLog() {
	var seen uint64
	for {
		lsn, changed := n.deps.Store.Durable()
		if lsn != seen {
			seen = lsn
			n.mu.Lock()
			now := time.Now()
			n.repl.LogGrew(now)
			n.afterLocked(now)
			n.mu.Unlock()
		}
		select {
		case <-n.ctx.Done():
			return
		case <-changed:
		}
	}
}

// afterLocked follows up on whatever the machines decided: role changes
// between the two machines, and the requests they want sent. mu must be
// held.
func (n *Node) afterLocked(now time.Time) {
	if n.bully != nil {
		coord := n.bully.Coordinator()
		if old := *n.coordinator.Load(); old != coord {
			n.coordinator.Store(&coord)
			if coord != "" {
				n.log.Info("new coordinator", "new", coord, "old", old, "term", n.bully.Term())
			}
		}
		leading := n.bully.State() == election.Leading
		if leading && !n.leading {
			n.log.Info("won the election: this server is the coordinator", "term", n.bully.Term())
			n.repl.Campaign(now)
		}
		if !leading && n.leading {
			n.repl.Follow()
		}
		n.leading = leading
		for _, m := range n.bully.Outbox() {
			n.sendElection(m)
		}
	}
	for _, out := range n.repl.Outbox() {
		n.sendReplication(out)
	}
	// Wake the waiters only when what they wait for may have changed: on
	// a busy coordinator this runs several times per commit, and every
	// wake-up costs each of them a turn on the CPU and on mu.
	if v := (commitView{commit: n.repl.Commit(), epoch: n.repl.Epoch(), role: n.repl.Role()}); v != n.woken || n.readers.Load() > 0 {
		n.woken = v
		n.wakeCommit()
	}
}

// commitView is what the writes waiting in Committed wait for.
type commitView struct {
	commit, epoch uint64
	role          replication.Role
}

// wakeCommit wakes the writes waiting for the commit LSN.
func (n *Node) wakeCommit() {
	n.commitMu.Lock()
	close(n.commitCh)
	n.commitCh = make(chan struct{})
	n.commitMu.Unlock()
}

// commitChanged returns the channel wakeCommit closes next. A waiter takes
// it before it looks at the state under mu, so a change made after that
// look closes this channel (or a newer one, after closing this one).
func (n *Node) commitChanged() <-chan struct{} {
	n.commitMu.Lock()
	defer n.commitMu.Unlock()
	return n.commitCh
}

// sendElection sends one Bully message. mu must be held; the request
// itself runs in its own goroutine.
func (n *Node) sendElection(m election.Message) {
	switch m.Kind {
	case election.Election:
		n.log.Info("election: asking a higher rank", "to", m.To)
		n.request(m.To, ServiceElection, electionMsg{User: n.cfg.Name, Rank: n.bullyRank()}, func(_ message, err error) {
			now := time.Now()
			if err != nil {
				n.bully.Unreachable(m.To, now)
				return
			}
			n.log.Info("election: a higher rank answered OK", "from", m.To)
			n.bully.Heard(m.To, now)
			n.bully.Step(election.Message{Kind: election.Answer, From: m.To, To: n.cfg.Name, Rank: n.rankOf(m.To)}, now)
		})
	case election.Coordinator:
		n.log.Debug("announcing this server as coordinator")
		if n.deps.Publish != nil {
			announce := proto.Envelope{Service: ServiceElection, Data: proto.Data{"coordinator": n.cfg.Name, "rank": n.bullyRank()}}
			n.deps.Publish(proto.Publication{Topic: "servers", Payload: announce.Stamp(n.deps.Clock.Now(), n.deps.Lamport.Tick()).Encode()})
		}
		for name, p := range n.peers {
			if n.isAlive(name) && !p.foreign {
				n.request(name, ServiceCoordinator, electionMsg{User: n.cfg.Name, Rank: n.bullyRank(), Coordinator: n.cfg.Name}, nil)
			}
		}
	}
}

// isAlive reports whether the reference listed name last time.
func (n *Node) isAlive(name string) bool {
	return slices.ContainsFunc(n.alive, func(p peerInfo) bool { return p.Name == name })
}

// rankOf returns a peer's rank (0 when unknown). mu must be held.
func (n *Node) rankOf(name string) int {
	if p, ok := n.peers[name]; ok {
		return p.info.Rank
	}
	return 0
}

// pingPeersLocked checks that the coordinator is alive, and that the
// other live servers speak our cluster protocol. mu must be held.
func (n *Node) pingPeersLocked() {
	if n.bully == nil {
		return
	}
	coord := n.bully.Coordinator()
	for name, p := range n.peers {
		if !n.isAlive(name) || p.foreign || (name != coord && n.pinged(name)) {
			continue
		}
		n.request(name, ServicePing, struct{}{}, func(_ message, err error) {
			var refused *refusedError
			switch {
			case errors.As(err, &refused):
				p.foreign = true
				n.log.Warn("server does not speak this implementation's cluster protocol: it takes no part in elections and replication", "peer", name, "reply", refused.why)
				n.setPeersLocked()
			case err != nil && name == n.bully.Coordinator():
				n.log.Warn("the coordinator did not answer a liveness check", "peer", name, "err", err)
				n.bully.Unreachable(name, time.Now())
			case err == nil:
				p.pingedOK = true
				n.bully.Heard(name, time.Now())
			}
		})
	}
}

// pinged reports whether a peer has answered a ping before (then only the
// coordinator's liveness is checked). mu must be held.
func (n *Node) pinged(name string) bool { return n.peers[name].pingedOK }

// sendReplication sends one request of the replication machine. mu must
// be held.
func (n *Node) sendReplication(out replication.Outgoing) {
	var service string
	switch out.Msg.(type) {
	case replication.Prepare:
		service = replication.ServicePrepare
	case replication.Append:
		service = replication.ServiceAppend
	case replication.Fetch:
		service = replication.ServiceFetch
	default:
		return
	}
	n.request(out.To, service, out.Msg, func(reply message, err error) {
		now := time.Now()
		if err != nil {
			n.repl.Failed(out.To, out.Msg, now)
			return
		}
		var r any
		switch out.Msg.(type) {
		case replication.Prepare:
			var v replication.PrepareReply
			err = reply.decode(&v)
			r = v
		case replication.Append:
			var v replication.AppendReply
			err = reply.decode(&v)
			r = v
		case replication.Fetch:
			var v replication.FetchReply
			err = reply.decode(&v)
			r = v
		}
		if err != nil {
			n.log.Warn("bad replication reply", "peer", out.To, "service", service, "err", err)
			n.repl.Failed(out.To, out.Msg, now)
			return
		}
		n.repl.Step(r, now)
	})
}

// request sends one request to a peer in a goroutine of its own; done,
// when not nil, runs with mu held and the machines' follow-up after it.
// Its reply has been read once (readMsg), for the clock and an erro
// status (then err is a *refusedError); done decodes the data it wants.
// mu must be held by the caller.
func (n *Node) request(to, service string, msg any, done func(reply message, err error)) {
	p, ok := n.peers[to]
	if !ok {
		if done != nil {
			done(message{}, fmt.Errorf("no address known for %s", to))
		}
		return
	}
	frame := encodeMsg(service, msg, n.deps.Clock.Now(), n.deps.Lamport.Tick())
	client := p.client
	n.wg.Go(func() {
		var reply message
		raw, err := n.deps.Key.Exchange(n.ctx, client.Do, frame)
		if err == nil {
			reply, err = readMsg(raw)
			n.deps.Lamport.Observe(reply.clock)
			if err != nil {
				err = &refusedError{why: err.Error()}
			}
		}
		if done == nil || n.ctx.Err() != nil {
			return
		}
		n.mu.Lock()
		defer n.mu.Unlock()
		done(reply, err)
		n.afterLocked(time.Now())
	})
}

// refusedError is a peer's erro reply to a request.
type refusedError struct{ why string }

func (e *refusedError) Error() string { return e.why }

// call sends one request to a peer and waits for the reply (no mu held).
func (n *Node) call(ctx context.Context, to, service string, msg any) ([]byte, error) {
	return n.callWith(ctx, to, service, msg, false)
}

// callSlow is call for requests that wait for replication at the peer
// (a forwarded write, a commit request): up to ForwardTimeout.
func (n *Node) callSlow(ctx context.Context, to, service string, msg any) ([]byte, error) {
	return n.callWith(ctx, to, service, msg, true)
}

func (n *Node) callWith(ctx context.Context, to, service string, msg any, slow bool) ([]byte, error) {
	n.mu.Lock()
	p, ok := n.peers[to]
	n.mu.Unlock()
	if !ok {
		return nil, fmt.Errorf("no address known for %s", to)
	}
	client := p.client
	if slow {
		client = p.slow
	}
	reply, err := n.deps.Key.Exchange(ctx, client.Do, encodeMsg(service, msg, n.deps.Clock.Now(), n.deps.Lamport.Tick()))
	if err != nil {
		return nil, err
	}
	clk, _ := decodeMsg(reply, nil)
	n.deps.Lamport.Observe(clk)
	return reply, nil
}

// Leading reports whether this server orders writes now: it is the
// coordinator and has caught up.
func (n *Node) Leading() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.repl.Role() == replication.Leader
}

// Forward sends a client's write to the coordinator and returns its reply.
func (n *Node) Forward(ctx context.Context, frame []byte) ([]byte, error) {
	n.mu.Lock()
	leader, role := n.repl.Leader(), n.repl.Role()
	n.mu.Unlock()
	if leader == "" || leader == n.cfg.Name || role != replication.Follower {
		return nil, retryf("the cluster is electing a coordinator; try again")
	}
	ctx, cancel := context.WithTimeout(ctx, n.cfg.ForwardTimeout)
	defer cancel()
	reply, err := n.callSlow(ctx, leader, ServiceForward, forwardMsg{Frame: frame})
	if err != nil {
		return nil, retryf("the coordinator %s did not answer (%v); try again", leader, err)
	}
	return reply, nil // the handler decodes it (a malformed one becomes a retry)
}

// ReadBarrier returns once this server holds every write acknowledged
// before it was called, and nothing that is not committed, so a client
// reads its own writes on any server and never a write that may vanish.
// The coordinator answers from its own store once a majority has
// confirmed, after the read arrived, that it still leads (ReadIndex); any
// other server asks the coordinator for that commit LSN (`commit`) and
// waits until it holds it.
func (n *Node) ReadBarrier(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, n.cfg.ReadTimeout)
	defer cancel()
	n.mu.Lock()
	leader, role := n.repl.Leader(), n.repl.Role()
	n.mu.Unlock()
	switch {
	case role == replication.Leader:
		_, err := n.readIndex(ctx)
		return err
	case leader == "" || role == replication.Candidate:
		return retryf("the cluster is electing a coordinator; try again")
	}
	reply, err := n.callSlow(ctx, leader, replication.ServiceCommit, struct{}{})
	if err != nil {
		return retryf("the coordinator %s could not confirm the data is current (%v); try again", leader, err)
	}
	var cr replication.CommitReply
	if _, err := decodeMsg(reply, &cr); err != nil || !cr.OK {
		return retryf("the coordinator is changing; try again")
	}
	if err := n.deps.Store.WaitDurable(ctx, cr.Commit); err != nil {
		return retryf("this server is still catching up; try again")
	}
	return nil
}

// readIndex is the coordinator's half of a read: it returns the LSN up to
// which a read may be served, once a majority has acknowledged an Append
// sent after the call (so no newer coordinator exists) and everything in
// its log at the call is committed (so nothing read can be rolled back).
func (n *Node) readIndex(ctx context.Context) (uint64, error) {
	n.readers.Add(1) // every acknowledgement wakes it, not only a new commit LSN
	defer n.readers.Add(-1)
	n.mu.Lock()
	since := time.Now()
	epoch := n.repl.Epoch()
	target, _ := n.deps.Store.Last()
	n.repl.Heartbeat(since) // do not wait for the next heartbeat to confirm
	n.afterLocked(since)
	n.mu.Unlock()
	for {
		ch := n.commitChanged()
		n.mu.Lock()
		ok := n.repl.Role() == replication.Leader && n.repl.Epoch() == epoch
		done := ok && n.repl.Confirmed(since) && n.repl.Commit() >= target
		n.mu.Unlock()
		switch {
		case !ok:
			return 0, retryf("the coordinator changed; try again")
		case done:
			return target, nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return 0, retryf("the coordinator cannot reach a majority to confirm the data is current; try again")
		}
	}
}

// Committed waits until the entry at lsn, written by this server while
// it led, is held by a majority.
func (n *Node) Committed(ctx context.Context, lsn uint64) error {
	if n.cfg.Replicas == 1 {
		return nil // durable here is committed
	}
	n.mu.Lock()
	epoch := n.repl.Epoch()
	n.mu.Unlock()
	timeout := time.NewTimer(n.cfg.CommitTimeout)
	defer timeout.Stop()
	for {
		ch := n.commitChanged()
		n.mu.Lock()
		commit, role, now := n.repl.Commit(), n.repl.Role(), n.repl.Epoch()
		n.mu.Unlock()
		switch {
		case role == replication.Leader && now == epoch && commit >= lsn:
			return nil
		case role != replication.Leader || now != epoch:
			return retryf("the coordinator changed before the write was replicated; retry it (with the same request_id)")
		}
		select {
		case <-ch:
		case <-timeout.C:
			return retryf("the write was not replicated within %v (too few servers reachable); retry it (with the same request_id)", n.cfg.CommitTimeout)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Handled counts one request handled: the coordinator syncs clocks after
// every BerkeleyEvery of them (the standard's rule).
func (n *Node) Handled() {
	if n.cfg.BerkeleyEvery == 0 {
		return
	}
	if n.requests.Add(1) < int64(n.cfg.BerkeleyEvery) {
		return
	}
	n.mu.Lock()
	due := n.berkeleyDueLocked(time.Now(), true)
	n.mu.Unlock()
	if due {
		n.wg.Go(n.syncClocks)
	}
}

// berkeleyDueLocked reports whether the coordinator should start a
// Berkeley round now, and marks it started. mu must be held.
func (n *Node) berkeleyDueLocked(now time.Time, counted bool) bool {
	if !n.leading || n.syncing || len(n.peers) == 0 || n.ctx.Err() != nil {
		return false
	}
	byCount := counted && n.cfg.BerkeleyEvery > 0 && n.requests.Load() >= int64(n.cfg.BerkeleyEvery) && now.Sub(n.lastSync) >= n.cfg.BerkeleyMinGap
	if !byCount && now.Sub(n.lastSync) < n.cfg.BerkeleyInterval {
		return false
	}
	n.syncing, n.lastSync = true, now
	n.requests.Store(0)
	return true
}

// Status is what chat status shows of a server.
func (n *Node) Status() proto.Data {
	n.mu.Lock()
	defer n.mu.Unlock()
	role := n.repl.Role().String()
	if n.cfg.Reference == "" {
		role = "alone"
	}
	lsn, _ := n.deps.Store.Last()
	count, _ := n.deps.Store.Count(context.Background())
	now := n.deps.Clock.Now()
	return proto.Data{
		"status": proto.StatusOK, "name": n.cfg.Name, "rank": n.state.Rank, "role": role,
		"coordinator": *n.coordinator.Load(), "epoch": n.repl.Epoch(), "leader": n.repl.Leader(),
		"offset_ms": float64(n.deps.Clock.Offset()) / float64(time.Millisecond), "time_ms": now.UnixMilli(),
		"messages": count, "lsn": lsn, "commit": n.repl.Commit(),
	}
}

// finite reports whether f is a usable number.
func finite(f float64) bool { return !math.IsNaN(f) && !math.IsInf(f, 0) }
