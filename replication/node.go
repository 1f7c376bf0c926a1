// Package replication keeps every server's copy of the data the same:
// primary-backup over the store's change log, with the Bully coordinator
// as the one server that orders writes, fenced by epochs.
//
// How a write travels: any server may receive it; a server that is not
// the coordinator forwards it to the coordinator (package cluster). The
// coordinator's store checks it and appends it to its log under the next
// LSN; the coordinator's Node sends the new entries to every other server
// (Append), each appends them durably and answers; once a majority of
// the servers (the coordinator included) hold an entry durably, it is
// committed, and only then is the client answered. So an acknowledged
// write survives any one server of three dying.
//
// Epochs make it safe when the coordinator changes or the network
// splits. A server that becomes coordinator (Campaign) picks an epoch
// newer than any it has seen and asks every server to promise it
// (Prepare); a server that promised epoch E refuses Append from any older
// epoch, so a deposed coordinator can no longer commit anything. With a
// majority of promises the candidate looks at their logs' ends, copies
// from the most up-to-date one whatever it lacks (Fetch) — everything
// committed is on at least one server of any majority — writes a first
// entry of its own epoch and only then orders writes. A server cut off
// with a minority never gets a majority: it refuses writes, and its
// clients retry elsewhere. A log whose end does not match the
// coordinator's (it holds entries that were never committed, left by a
// coordinator that died) loses those entries and takes the coordinator's:
// a Log that is a Truncater drops only them; any other Log is emptied and
// copied again from the start, which is unsafe (see Truncater).
//
// Node is the algorithm only, as a state machine in the style of
// etcd-io/raft: it is fed requests, replies and ticks of injected time,
// reads and writes its Log, and says which requests to send (Outbox). It
// starts no goroutine, reads no clock and opens no socket; package
// cluster runs it over the network and internal/sim runs it in a
// deterministic simulation. It is not safe for concurrent use.
package replication

import (
	"errors"
	"maps"
	"slices"
	"time"
)

// Log is what a Node needs of the server's storage. Every write must be
// durable when it returns.
type Log interface {
	// Last returns the position of the last entry (the zero Pos when empty).
	Last() Pos
	// EpochAt returns the epoch of the entry at lsn (0 for lsn 0); false
	// when there is no such entry.
	EpochAt(lsn uint64) (uint64, bool)
	// Entries returns up to max entries after lsn (about maxBytes at most,
	// at least one when there is one).
	Entries(after uint64, max, maxBytes int) ([]Entry, error)
	// Append appends entries that follow the last one.
	Append(entries []Entry) error
	// StartEpoch appends the first entry of the coordinator's new epoch
	// (a no-op) and stamps every entry the store orders from now on with
	// epoch. It returns the entry's LSN.
	StartEpoch(epoch uint64) (uint64, error)
	// Reset empties the log (and everything built from it).
	Reset() error
	// SavePromise keeps the promise on disk.
	SavePromise(Promise) error
}

// Truncater is a Log that can also drop its last entries. A Node whose
// Log is a Truncater removes only the entries that conflict with the
// coordinator's (or, as a candidate, with the most up-to-date log's) and
// keeps those before them, as Raft does. A Node over a Log without it
// empties a divergent log with Reset, which is unsafe: the entries it
// shared with the coordinator may be committed ones whose majority needs
// this copy, and a failure before the log is copied again loses them
// (the simulator shows it: internal/sim, Options.ResetOnly).
type Truncater interface {
	// TruncateAfter removes every entry after lsn (and everything built
	// from them), durably.
	TruncateAfter(lsn uint64) error
}

// Role is what a Node does now.
type Role int

// The roles.
const (
	Follower  Role = iota // takes entries from the coordinator
	Candidate             // collecting promises, then catching up, before it leads
	Leader                // orders writes: the coordinator, ready
)

func (r Role) String() string {
	switch r {
	case Follower:
		return "follower"
	case Candidate:
		return "candidate"
	case Leader:
		return "leader"
	}
	return "unknown"
}

// Config configures a Node. Every timeout is here.
type Config struct {
	Self string
	// Replicas is the number of servers in the cluster. An entry is
	// committed once Replicas/2+1 of them hold it.
	Replicas int
	// HeartbeatInterval is how often the coordinator sends each server an
	// Append even when it has no new entries (default 200ms).
	HeartbeatInterval time.Duration
	// RetryInterval is how long the coordinator waits before sending again
	// to a server whose last request failed (default 100ms).
	RetryInterval time.Duration
	// CampaignTimeout is how long a candidate waits for a majority of
	// promises, or for a fetch, before it starts over with a newer epoch
	// (default 1s).
	CampaignTimeout time.Duration
	MaxBatch        int // entries in one Append or Fetch reply (default 1024)
	MaxBatchBytes   int // bytes of entries in one Append or Fetch reply (default 512 KiB)
}

// DefaultConfig returns the defaults for server self in a cluster of
// replicas servers.
func DefaultConfig(self string, replicas int) Config {
	return Config{Self: self, Replicas: replicas, HeartbeatInterval: 200 * time.Millisecond,
		RetryInterval: 100 * time.Millisecond, CampaignTimeout: time.Second, MaxBatch: 1024, MaxBatchBytes: 512 << 10}
}

// Validate reports a config that cannot work.
func (c Config) Validate() error {
	switch {
	case c.Self == "":
		return errors.New("replication: Self is required")
	case c.Replicas < 1:
		return errors.New("replication: Replicas must be at least 1")
	case c.HeartbeatInterval <= 0 || c.RetryInterval <= 0 || c.CampaignTimeout <= 0:
		return errors.New("replication: intervals and timeouts must be positive")
	case c.MaxBatch < 1 || c.MaxBatchBytes < 1:
		return errors.New("replication: MaxBatch and MaxBatchBytes must be positive")
	}
	return nil
}

// Majority is how many servers of n make a majority.
func Majority(n int) int { return n/2 + 1 }

// follower is the coordinator's view of one other server.
type follower struct {
	next     uint64    // LSN of the next entry to send
	match    uint64    // last LSN known durable there
	inFlight bool      // a request is on its way
	lastSent time.Time // when the last request left
	retryAt  time.Time // no request before this (after a failure)
	seq      uint64    // Seq of the last Append sent
	ackedAt  time.Time // when the last Append it acknowledged (in this epoch) left
}

// Node is one server's replication state machine.
type Node struct {
	cfg   Config
	log   Log
	peers []string // the other servers

	promise   Promise // the newest epoch promised, and to whom
	seenEpoch uint64  // the newest epoch another server said it promised
	abstain   uint64  // no campaign and no promise until the log reaches this LSN (Abstain)
	role      Role
	commit    uint64 // committed LSN, as far as this node knows
	err       error  // the last failure of the Log

	// Candidate.
	wantLead  bool // Campaign was called and Follow was not since
	campaign  time.Time
	promises  map[string]PrepareReply
	fetchFrom string // the peer being copied from ("" : not fetching)
	fetchTo   Pos    // its log's end at its promise
	fetching  bool   // a Fetch is in flight (at most one, across campaigns too)
	fetchAt   Pos    // the After of the Fetch in flight
	fetchNext Pos    // the After of the next Fetch: this log's end, or the last entry known to match the peer's

	// Leader.
	epochStart uint64 // LSN of the first entry of this node's epoch
	followers  map[string]*follower

	out []Outgoing
}

// New returns a follower that has made promise (as kept on disk).
func New(cfg Config, log Log, promise Promise) *Node {
	if err := cfg.Validate(); err != nil {
		panic(err)
	}
	return &Node{cfg: cfg, log: log, promise: promise}
}

// SetPeers sets the other servers of the cluster (self is ignored).
func (n *Node) SetPeers(peers []string) {
	n.peers = n.peers[:0]
	for _, p := range peers {
		if p != n.cfg.Self && !slices.Contains(n.peers, p) {
			n.peers = append(n.peers, p)
		}
	}
	slices.Sort(n.peers)
	if n.role == Leader {
		for _, p := range n.peers {
			if n.followers[p] == nil {
				n.followers[p] = &follower{next: n.epochStart}
			}
		}
	}
}

// Abstain keeps the node out of elections — no Campaign, no promise —
// until its log reaches lsn. A server whose damaged store lost entries it
// had acknowledged must not help elect a coordinator that lacks them: its
// vote would count for a log it no longer holds.
func (n *Node) Abstain(lsn uint64) { n.abstain = lsn }

// abstaining reports whether Abstain still holds.
func (n *Node) abstaining() bool {
	if n.abstain > 0 && n.log.Last().LSN >= n.abstain {
		n.abstain = 0
	}
	return n.abstain > 0
}

// Role returns what the node does now.
func (n *Node) Role() Role { return n.role }

// Epoch returns the newest epoch this node has promised (its own when it
// leads).
func (n *Node) Epoch() uint64 { return n.promise.Epoch }

// Leader returns the coordinator this node takes entries from (itself
// when it leads; "" when it knows none).
func (n *Node) Leader() string { return n.promise.Leader }

// Commit returns the committed LSN as far as this node knows: exact on
// the coordinator, possibly behind elsewhere.
func (n *Node) Commit() uint64 { return n.commit }

// Err returns the last failure of the Log, if any.
func (n *Node) Err() error { return n.err }

// Outbox returns the requests to send since the last call.
func (n *Node) Outbox() []Outgoing {
	out := n.out
	n.out = nil
	return out
}

// Campaign makes the node try to lead (the Bully election chose it): it
// becomes a candidate with a new epoch and asks every server to promise
// it. It keeps trying, with newer epochs, until it leads or Follow is
// called.
func (n *Node) Campaign(now time.Time) {
	n.wantLead = true
	if n.abstaining() {
		return // Tick tries again
	}
	if n.role != Follower {
		return // leading already, or campaigning (Tick starts over on timeout)
	}
	epoch := max(n.promise.Epoch, n.seenEpoch, n.log.Last().Epoch) + 1
	if !n.savePromise(Promise{Epoch: epoch, Leader: n.cfg.Self}) {
		return
	}
	n.role, n.campaign = Candidate, now
	n.promises = map[string]PrepareReply{n.cfg.Self: {From: n.cfg.Self, OK: true, Promised: n.promise, Last: n.log.Last()}}
	n.fetchFrom = "" // a Fetch still in flight stays so: its outcome clears it
	for _, p := range n.peers {
		n.send(p, Prepare{Epoch: epoch, Leader: n.cfg.Self})
	}
	n.tryLead(now)
}

// Follow stops the node from trying to lead (the election chose another
// server). A leader steps down: it orders no more writes.
func (n *Node) Follow() {
	n.wantLead = false
	if n.role != Follower {
		n.role = Follower
		n.followers, n.promises = nil, nil
	}
}

// savePromise records p durably; false (and Err set) when the disk failed.
func (n *Node) savePromise(p Promise) bool {
	if p == n.promise {
		return true
	}
	if err := n.log.SavePromise(p); err != nil {
		n.err = err
		return false
	}
	n.promise = p
	return true
}

// HandlePrepare answers a candidate's Prepare.
func (n *Node) HandlePrepare(m Prepare) PrepareReply {
	if n.abstaining() {
		return PrepareReply{From: n.cfg.Self, Promised: n.promise, Last: n.log.Last()}
	}
	if !n.promise.Allows(m.Epoch, m.Leader) || !n.savePromise(Promise{Epoch: m.Epoch, Leader: m.Leader}) {
		return PrepareReply{From: n.cfg.Self, Promised: n.promise, Last: n.log.Last()}
	}
	if m.Leader != n.cfg.Self {
		n.stepDown()
	}
	return PrepareReply{From: n.cfg.Self, OK: true, Promised: n.promise, Last: n.log.Last()}
}

// stepDown makes a candidate or leader a follower, keeping wantLead: the
// node campaigns again when its CampaignTimeout passes.
func (n *Node) stepDown() {
	if n.role != Follower {
		n.role = Follower
		n.followers, n.promises = nil, nil
	}
}

// HandleAppend answers the coordinator's Append: it appends the entries
// that follow its log, and drops those that conflict with them (see
// diverged).
//
// An Append of the epoch this node promised is taken even when it
// promised that epoch to another candidate (or to itself): only a leader
// sends Append, and two candidates cannot both win an epoch, so the one
// it promised lost (Raft's rule for AppendEntries of the current term).
func (n *Node) HandleAppend(m Append) AppendReply {
	refuse := AppendReply{From: n.cfg.Self, Epoch: n.promise.Epoch, Last: n.log.Last()}
	if m.Leader == n.cfg.Self || m.Epoch < n.promise.Epoch || !n.savePromise(Promise{Epoch: m.Epoch, Leader: m.Leader}) {
		return refuse
	}
	n.stepDown()
	last := n.log.Last()
	if m.Prev.LSN > last.LSN {
		return AppendReply{From: n.cfg.Self, Epoch: n.promise.Epoch, Last: last} // behind: send from my end
	}
	if epoch, ok := n.log.EpochAt(m.Prev.LSN); !ok || epoch != m.Prev.Epoch {
		return n.diverged(m.Prev.LSN)
	}
	entries := m.Entries
	for len(entries) > 0 && entries[0].LSN <= last.LSN { // already here (a retried Append)
		if epoch, ok := n.log.EpochAt(entries[0].LSN); !ok || epoch != entries[0].Epoch {
			if _, ok := n.log.(Truncater); !ok {
				return n.diverged(entries[0].LSN)
			}
			if !n.truncate(entries[0].LSN - 1) {
				return AppendReply{From: n.cfg.Self, Epoch: n.promise.Epoch, Last: n.log.Last()}
			}
			break
		}
		entries = entries[1:]
	}
	if len(entries) > 0 {
		if err := n.log.Append(entries); err != nil {
			n.err = err
			return AppendReply{From: n.cfg.Self, Epoch: n.promise.Epoch, Last: n.log.Last()}
		}
	}
	// The log holds the coordinator's entries up to the Append's last
	// one; what follows, if anything, is older and unchecked: it must not
	// count as held, nor as committed.
	held := m.Prev
	if len(m.Entries) > 0 {
		held = m.Entries[len(m.Entries)-1].Pos()
	}
	n.commit = max(n.commit, min(m.Commit, held.LSN))
	return AppendReply{From: n.cfg.Self, OK: true, Epoch: n.promise.Epoch, Last: held, Seq: m.Seq}
}

// diverged handles a log whose entry at lsn differs from the
// coordinator's. That entry and those after it are not committed (the
// coordinator holds every committed entry): a Truncater drops them, and
// the answer asks the coordinator to send again from this node's commit
// LSN, which it holds, so that the first entry that differs is found.
// Another Log is emptied (unsafe, see Truncater) and the coordinator
// sends everything.
func (n *Node) diverged(lsn uint64) AppendReply {
	if _, ok := n.log.(Truncater); ok {
		if !n.truncate(lsn - 1) {
			return AppendReply{From: n.cfg.Self, Epoch: n.promise.Epoch, Last: n.log.Last()}
		}
		return AppendReply{From: n.cfg.Self, Epoch: n.promise.Epoch, Last: n.back(lsn)}
	}
	if err := n.log.Reset(); err != nil {
		n.err = err
	}
	n.commit = 0
	return AppendReply{From: n.cfg.Self, Epoch: n.promise.Epoch, Last: n.log.Last()}
}

// back returns where to compare this log with another again when they
// differ at lsn: the commit LSN, whose entries every up-to-date log
// holds, or before lsn.
func (n *Node) back(lsn uint64) Pos {
	at := min(n.commit, lsn-1)
	epoch, _ := n.log.EpochAt(at)
	return Pos{LSN: at, Epoch: epoch}
}

// truncate drops the entries after lsn; false (and Err set) when the
// disk failed. The Log must be a Truncater.
func (n *Node) truncate(lsn uint64) bool {
	if err := n.log.(Truncater).TruncateAfter(lsn); err != nil {
		n.err = err
		return false
	}
	return true
}

// HandleFetch answers a candidate's Fetch.
func (n *Node) HandleFetch(m Fetch) FetchReply {
	last := n.log.Last()
	if epoch, ok := n.log.EpochAt(m.After.LSN); !ok || epoch != m.After.Epoch {
		return FetchReply{From: n.cfg.Self, Diverged: true, Last: last}
	}
	entries, err := n.log.Entries(m.After.LSN, min(max(m.Max, 1), n.cfg.MaxBatch), n.cfg.MaxBatchBytes)
	if err != nil {
		n.err = err
	}
	return FetchReply{From: n.cfg.Self, Entries: entries, Last: last}
}

// Step takes the reply to one of the node's requests.
func (n *Node) Step(reply any, now time.Time) {
	switch r := reply.(type) {
	case PrepareReply:
		n.stepPrepare(r, now)
	case AppendReply:
		n.stepAppend(r, now)
	case FetchReply:
		n.stepFetch(r, now)
	}
}

// Failed tells the node that its request to peer got no reply.
func (n *Node) Failed(to string, msg any, now time.Time) {
	switch msg.(type) {
	case Append:
		if f := n.followers[to]; f != nil {
			f.inFlight, f.retryAt = false, now.Add(n.cfg.RetryInterval)
		}
	case Fetch:
		n.fetching = false // the one in flight; retried on the next Tick
	}
}

func (n *Node) stepPrepare(r PrepareReply, now time.Time) {
	if r.Promised.Epoch > n.promise.Epoch {
		n.observeEpoch(r.Promised.Epoch)
	}
	if !r.OK && n.wantLead && r.Promised.Epoch >= n.promise.Epoch && r.Promised.Leader != n.cfg.Self {
		// Refused: the epoch is taken (a coordinator this one replaces
		// chose it too). Start over with a newer one at the next Tick
		// instead of waiting out CampaignTimeout.
		n.seenEpoch = max(n.seenEpoch, r.Promised.Epoch)
		n.campaign = time.Time{}
	}
	if n.role != Candidate || !r.OK || r.Promised != n.promise {
		return
	}
	n.promises[r.From] = r
	n.tryLead(now)
}

// observeEpoch notes that some server promised a newer epoch: this node
// cannot lead with its own and steps down (it campaigns again later with
// a newer one).
func (n *Node) observeEpoch(epoch uint64) {
	if epoch > n.promise.Epoch && n.role != Follower {
		n.stepDown()
	}
	n.seenEpoch = max(n.seenEpoch, epoch)
}

// tryLead moves a candidate on once a majority has promised: it copies
// what the most up-to-date of them has that it lacks, then leads.
func (n *Node) tryLead(now time.Time) {
	if n.role != Candidate || n.fetchFrom != "" || len(n.promises) < Majority(n.cfg.Replicas) {
		return
	}
	best := n.promises[n.cfg.Self]
	for _, name := range slices.Sorted(maps.Keys(n.promises)) {
		if p := n.promises[name]; best.Last.Before(p.Last) {
			best = p
		}
	}
	if best.From != n.cfg.Self && n.log.Last().Before(best.Last) {
		n.fetchFrom, n.fetchTo, n.fetchNext = best.From, best.Last, n.log.Last()
		n.fetch(now)
		return
	}
	n.lead(now)
}

// fetch asks the peer being copied from for what follows this log,
// unless a Fetch is in flight already (Tick sends it after its outcome).
func (n *Node) fetch(now time.Time) {
	if n.fetching {
		return
	}
	n.fetching, n.fetchAt = true, n.fetchNext
	n.send(n.fetchFrom, Fetch{After: n.fetchAt, Max: n.cfg.MaxBatch})
}

func (n *Node) stepFetch(r FetchReply, now time.Time) {
	if !n.fetching {
		return // no Fetch in flight: a duplicate
	}
	n.fetching = false
	// Only the answer to a Fetch from the peer being copied from now, after
	// an entry this log still holds, may be applied: one sent before a
	// campaign started over may come from another peer or follow another
	// end.
	if n.role != Candidate || r.From != n.fetchFrom {
		return
	}
	if epoch, ok := n.log.EpochAt(n.fetchAt.LSN); !ok || epoch != n.fetchAt.Epoch ||
		(len(r.Entries) > 0 && r.Entries[0].LSN != n.fetchAt.LSN+1) {
		n.fetchNext = n.log.Last() // Tick fetches again
		return
	}
	if r.Last.Epoch > n.promise.Epoch {
		// The peer took entries of a newer epoch since it promised: this
		// campaign is over (copying them and then starting an older epoch
		// after them would make a log whose epochs go back).
		n.observeEpoch(r.Last.Epoch)
		return
	}
	_, truncates := n.log.(Truncater)
	progressed := true
	switch {
	case r.Diverged && truncates:
		n.fetchNext = n.back(n.fetchAt.LSN) // compare again from there
	case r.Diverged:
		if err := n.log.Reset(); err != nil {
			n.err = err
			return
		}
		n.fetchNext = Pos{}
	case len(r.Entries) > 0:
		entries := r.Entries
		for len(entries) > 0 && entries[0].LSN <= n.log.Last().LSN { // held already, or in conflict
			if epoch, _ := n.log.EpochAt(entries[0].LSN); epoch != entries[0].Epoch {
				if !truncates || !n.truncate(entries[0].LSN-1) {
					return
				}
				break
			}
			entries = entries[1:]
		}
		if len(entries) > 0 {
			if err := n.log.Append(entries); err != nil {
				n.err = err
				return
			}
		}
		n.fetchNext = r.Entries[len(r.Entries)-1].Pos()
	default:
		progressed = false // nothing new: the campaign's time runs on
	}
	if progressed {
		n.campaign = now // the copy progresses: CampaignTimeout counts from here
	}
	if n.log.Last().Before(n.fetchTo) || n.fetchNext != n.log.Last() {
		n.fetch(now)
		return
	}
	n.lead(now)
}

// lead makes a caught-up candidate the coordinator: the first entry of
// its epoch goes into its log, and from there to every server.
func (n *Node) lead(now time.Time) {
	lsn, err := n.log.StartEpoch(n.promise.Epoch)
	if err != nil {
		n.err = err
		return
	}
	n.role, n.epochStart, n.promises = Leader, lsn, nil
	n.followers = map[string]*follower{}
	for _, p := range n.peers {
		n.followers[p] = &follower{next: lsn}
	}
	n.advanceCommit()
	n.replicate(now)
}

func (n *Node) stepAppend(r AppendReply, now time.Time) {
	if r.Epoch > n.promise.Epoch {
		n.observeEpoch(r.Epoch)
		return
	}
	f := n.followers[r.From]
	if n.role != Leader || f == nil {
		return
	}
	f.inFlight = false
	switch {
	case r.Epoch < n.promise.Epoch:
		// The answer to an Append of an older epoch of this node's: it
		// tells what the follower held of another log.
	case r.OK:
		f.match = max(f.match, r.Last.LSN)
		f.next = f.match + 1
		if r.Seq == f.seq {
			f.ackedAt = f.lastSent // it follows this node in this epoch as of then (reads, read.go)
		}
		n.advanceCommit()
	default:
		f.next = min(f.next, r.Last.LSN+1) // send from the end of its log
		f.match = min(f.match, r.Last.LSN)
	}
	n.replicate(now)
}

// advanceCommit moves the commit LSN to the newest entry of this epoch
// that a majority holds (entries of older epochs are committed with it).
func (n *Node) advanceCommit() {
	matches := []uint64{n.log.Last().LSN}
	for _, f := range n.followers {
		matches = append(matches, f.match)
	}
	slices.Sort(matches)
	slices.Reverse(matches)
	m := Majority(n.cfg.Replicas)
	if len(matches) < m {
		return
	}
	if c := matches[m-1]; c >= n.epochStart && c > n.commit {
		n.commit = c
	}
}

// LogGrew tells a leader that its store appended entries: it sends them
// on (and, alone, commits them).
func (n *Node) LogGrew(now time.Time) {
	if n.role == Leader {
		n.advanceCommit()
		n.replicate(now)
	}
}

// replicate sends each follower with nothing in flight what it lacks, or
// a heartbeat when it is due.
func (n *Node) replicate(now time.Time) {
	last := n.log.Last().LSN
	for _, p := range n.peers {
		f := n.followers[p]
		if f == nil || f.inFlight || now.Before(f.retryAt) {
			continue
		}
		if f.next > last && now.Sub(f.lastSent) < n.cfg.HeartbeatInterval {
			continue
		}
		prev := f.next - 1
		prevEpoch, ok := n.log.EpochAt(prev)
		if !ok {
			f.next = last + 1
			continue
		}
		m := Append{Epoch: n.promise.Epoch, Leader: n.cfg.Self, Prev: Pos{LSN: prev, Epoch: prevEpoch}, Commit: n.commit}
		if f.next <= last {
			entries, err := n.log.Entries(prev, n.cfg.MaxBatch, n.cfg.MaxBatchBytes)
			if err != nil {
				n.err = err
				continue
			}
			m.Entries = entries
		}
		f.seq++
		m.Seq = f.seq
		f.inFlight, f.lastSent = true, now
		n.send(p, m)
	}
}

// Tick drives the timeouts: heartbeats and retries of a leader, a
// candidate's campaign starting over, a follower that wants to lead
// campaigning again.
func (n *Node) Tick(now time.Time) {
	switch n.role {
	case Leader:
		n.replicate(now)
	case Candidate:
		if now.Sub(n.campaign) >= n.cfg.CampaignTimeout {
			n.recampaign(now)
		} else if n.fetchFrom != "" && !n.fetching {
			n.fetch(now)
		}
	case Follower:
		if n.wantLead && now.Sub(n.campaign) >= n.cfg.CampaignTimeout {
			n.Campaign(now)
		}
	}
}

// recampaign starts a candidate's campaign over. When no server said it
// promised a newer epoch, it asks again for the same one (only the
// requests or their answers were lost: a server cut off from the others
// does not inflate epochs while it waits, and disrupts nobody when it
// comes back); otherwise it campaigns with a newer epoch.
func (n *Node) recampaign(now time.Time) {
	if n.seenEpoch >= n.promise.Epoch || n.promise.Leader != n.cfg.Self || n.fetchFrom != "" {
		n.role = Follower
		n.Campaign(now)
		return
	}
	n.campaign = now
	n.promises = map[string]PrepareReply{n.cfg.Self: {From: n.cfg.Self, OK: true, Promised: n.promise, Last: n.log.Last()}}
	for _, p := range n.peers {
		n.send(p, Prepare{Epoch: n.promise.Epoch, Leader: n.cfg.Self})
	}
	n.tryLead(now)
}

func (n *Node) send(to string, msg any) { n.out = append(n.out, Outgoing{To: to, Msg: msg}) }
