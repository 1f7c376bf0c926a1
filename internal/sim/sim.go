// Package sim is a deterministic simulation of the cluster's algorithms,
// in the style of FoundationDB's and TigerBeetle's simulators: a seed
// drives a whole cluster of servers (each a Bully election.Machine and a
// replication.Node over an in-memory log) through crashes, restarts,
// partitions, lost, duplicated, delayed and reordered messages and a
// stream of client writes, and the simulator checks the invariants that
// make the cluster correct after every step. The same seed replays the
// same run exactly: one math/rand/v2 PCG source seeded from it decides
// everything, the clock is fake (a time.Time the scheduler advances), and
// there is no goroutine, no real time and no unsorted map iteration.
//
// # The world
//
// A Run simulates Options.Servers servers s1..sN (3 by default); server
// si has Bully rank i. Each has a replication.MemLog, which keeps everything across a
// crash: Append, StartEpoch, TruncateAfter, Reset and SavePromise are
// synchronous and durable when they return, as the store's are. A MemLog
// is a replication.Truncater; with Options.ResetOnly the Nodes get it
// without TruncateAfter, as the store is today, and must empty a
// divergent log instead (which loses writes: TestResetOnlyLosesWrites).
// A crash loses the processes' memory (the Machine, the Node, requests
// waiting for replies), every message on its way to the crashed
// incarnation and half of those it had sent; a restart makes a new
// election.Machine and a new replication.Node over the log and the
// promise it kept.
//
// The scheduler is a queue of events ordered by fake time: each server's
// tick (every 50ms), messages arriving, requests timing out, client
// writes, faults. Every message takes 1ms plus a random delay (up to
// Options.MaxDelay, and now and then, at Options.SlowRate, up to 1.5s:
// past the request timeout), so messages overtake one another; each is
// lost at Options.LossRate; a request is delivered twice at
// Options.DupRate (a transport's retry). A partition splits the servers
// into two groups: a message between them is lost when it arrives.
//
// # The wiring: what package cluster does, here
//
// The simulator connects the machines the way the real adapter
// (cluster.Node) does, so that the simulation tests the real protocol:
//
//   - Every request gets exactly one outcome at its sender: the reply, or,
//     when none arrives within one second of fake time (lost request,
//     lost reply, partition, crashed receiver), a failure. A late reply is
//     discarded, as the adapter's request client discards it. (With
//     Options.DupReplies the second reply of a duplicated request reaches
//     the sender too: harsher than the adapter.)
//   - Bully: an Election message to a higher rank is a request; the
//     receiver's Machine steps it and the network answers OK by itself,
//     which the sender's Machine gets as Heard and an Answer message; a
//     failed Election request is Unreachable. A Coordinator announcement
//     is one message to each other server, each of which may be lost. A
//     server whose Machine knows another coordinator pings it every 250ms:
//     a reply is Heard, a failure Unreachable. Timeouts are
//     election.DefaultConfig's.
//   - Replication: when a Machine becomes Leading, its Node Campaigns;
//     when it stops leading (it follows another), its Node Follows. After
//     every event a server handles, both Outboxes are drained and sent. A
//     Prepare, Append or Fetch is delivered to the receiver's Handle*, and
//     the reply to the sender's Step; a failure to its Failed. Timeouts
//     are replication.DefaultConfig's, with Options.MaxBatch entries per
//     batch (small, so that catching up takes many rounds).
//   - Clients: at random times a client sends a write (a unique id) to a
//     random live server. A server whose Node leads appends it to its log
//     (the next LSN, the leader's epoch), calls LogGrew, and acknowledges
//     it once its Commit reaches the entry's LSN while it still leads the
//     same epoch, as cluster.Node.Committed does; a server that stops
//     leading first fails the write (the client retries). A server that
//     does not lead refuses it (the real one forwards it, which ends the
//     same way).
//
// # The invariants
//
// Checked after every event (and at the end), each with its number in
// Violation.Invariant:
//
//  0. The Node never misuses its Log: MemLog refuses entries that do not
//     follow its end, as the store does, and a log's epochs never go back
//     from one entry to the next.
//  1. At most one server is Leader in any epoch, ever.
//  2. An acknowledged write is, when it is acknowledged, durable in the
//     logs of a majority of the servers.
//  3. At the end (faults stopped, partitions healed, every server running,
//     the simulation continued until quiet): every log is the same, holds
//     every acknowledged write exactly once and no write twice, and every
//     Machine follows the highest rank, whose Node leads and has
//     committed everything. The end fails if that takes more than 3
//     minutes of fake time, or 10 seconds without progress (no log
//     growing, no commit moving, no entries taken by anyone).
//  4. Committed entries never change: once a server holds an entry at LSN
//     L with its commit at L or beyond, every server that holds an entry
//     at L and commits it holds that same entry, for the rest of the run.
//  5. A server's promised epoch never decreases, across restarts too.
//
// Run returns a *Violation for the first invariant broken, with the seed:
// Run with the same Options replays the run to that point exactly.
package sim

import (
	"container/heap"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"time"

	"chat/election"
	"chat/replication"
)

// The adapter's timings the simulator uses.
const (
	TickInterval   = 50 * time.Millisecond  // how often each server's machines are ticked
	PingInterval   = 250 * time.Millisecond // how often a follower pings its coordinator
	RequestTimeout = time.Second            // how long a request waits for its reply
	slowDelay      = 1500 * time.Millisecond
	quietLimit     = 3 * time.Minute        // how long the quiet end may take to converge
	stuckLimit     = 10 * time.Second       // ... and how long it may go without progress
	checkEvery     = 100 * time.Millisecond // how often the quiet end looks for convergence
)

// start is the fake time every run begins at.
var start = time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)

// Options describe one simulated run. The zero value of a field picks its
// default, except for the fault rates and switches, which are off when
// zero.
type Options struct {
	Seed    int64
	Servers int // servers in the cluster (default 3)
	Steps   int // events simulated with faults and writes, before the quiet end (default 4000)

	LossRate float64 // probability that a message is lost
	DupRate  float64 // probability that a request is delivered twice
	SlowRate float64 // probability that a message takes up to 1.5s more
	Crashes  bool    // crash servers and restart them
	// Partitions splits the servers into two groups now and then.
	Partitions bool

	MaxDelay       time.Duration // a message's delay is 1ms plus up to this (default 10ms)
	WriteEvery     time.Duration // mean time between client writes (default 40ms)
	CrashEvery     time.Duration // mean time between crashes (default 3s)
	PartitionEvery time.Duration // mean time between partitions (default 4s)
	MaxBatch       int           // replication.Config.MaxBatch (default 3)
	DupReplies     bool          // a duplicated request's second reply also reaches the sender's Step
	// ResetOnly gives the Nodes logs without TruncateAfter, as the store
	// is today: a divergent log is emptied, which can lose committed
	// entries (TestResetOnlyLosesWrites).
	ResetOnly bool

	// Broken variants, to show that the checks catch a broken cluster.
	// AckOnAppend acknowledges a write as soon as the leader's own log
	// holds it, instead of once it is committed.
	AckOnAppend bool
	// NoDurabilityCheck skips invariant 2, so that only the end (3 and 4)
	// can catch a write lost.
	NoDurabilityCheck bool

	// Trace keeps the last events of the run in Violation.Trace.
	Trace bool
}

func (o Options) withDefaults() Options {
	if o.Servers <= 0 {
		o.Servers = 3
	}
	if o.Steps <= 0 {
		o.Steps = 4000
	}
	if o.MaxDelay <= 0 {
		o.MaxDelay = 10 * time.Millisecond
	}
	if o.WriteEvery <= 0 {
		o.WriteEvery = 40 * time.Millisecond
	}
	if o.CrashEvery <= 0 {
		o.CrashEvery = 3 * time.Second
	}
	if o.PartitionEvery <= 0 {
		o.PartitionEvery = 4 * time.Second
	}
	if o.MaxBatch <= 0 {
		o.MaxBatch = 3
	}
	return o
}

// Random returns the options TestSeeds runs seed with: every kind of
// fault, at rates and with a cluster size the seed picks.
func Random(seed int64) Options {
	r := rand.New(rand.NewPCG(uint64(seed), 0x5eed))
	o := Options{
		Seed:       seed,
		Servers:    3,
		Crashes:    r.IntN(4) != 0,
		Partitions: r.IntN(4) != 0,
		LossRate:   []float64{0, 0.01, 0.05, 0.2}[r.IntN(4)],
		DupRate:    []float64{0, 0.05, 0.3}[r.IntN(3)],
		SlowRate:   []float64{0, 0.01, 0.05}[r.IntN(3)],
		MaxDelay:   []time.Duration{2 * time.Millisecond, 10 * time.Millisecond, 100 * time.Millisecond}[r.IntN(3)],
		WriteEvery: []time.Duration{10 * time.Millisecond, 40 * time.Millisecond, 200 * time.Millisecond}[r.IntN(3)],
		MaxBatch:   []int{1, 3, 64}[r.IntN(3)],
		DupReplies: r.IntN(4) == 0,
	}
	switch r.IntN(16) {
	case 0, 1, 2:
		o.Servers = 5
	case 3:
		o.Servers = 4
	case 4:
		o.Servers = 2
	case 5:
		o.Servers = 1
	}
	return o
}

// Result sums a run up.
type Result struct {
	Seed       int64
	Steps      int           // events simulated
	Elapsed    time.Duration // fake time simulated
	QuietAfter time.Duration // how long the quiet end took to converge

	Writes, Acked, Refused, Failed int // client writes: sent, acknowledged, refused (not the leader), failed (leader changed)

	Elections   int // times a Machine became Leading
	Leaders     int // epochs in which a server led
	Resets      int // logs emptied because they diverged
	Truncations int // logs cut back because their ends diverged
	Crashes     int
	Partitions  int

	Messages, Lost, Duplicated int

	FinalLSN    uint64 // the end of every log, at the end
	Coordinator string // the coordinator every server follows, at the end
	Digest      uint64 // a hash of every event: two runs of one seed must agree
}

// Violation is an invariant broken.
type Violation struct {
	Seed      int64
	Invariant int
	Step      int
	At        time.Duration // fake time since the start
	What      string
	Trace     []string // the last events, with Options.Trace
}

func (v *Violation) Error() string {
	return fmt.Sprintf("sim: seed %d: invariant %d broken at step %d (t=%v): %s", v.Seed, v.Invariant, v.Step, v.At, v.What)
}

// Run simulates one run and checks it.
func Run(opt Options) (Result, error) {
	opt = opt.withDefaults()
	w := newWorld(opt)
	for w.steps < opt.Steps && w.fail == nil {
		w.step()
	}
	if w.fail == nil {
		w.quiet()
	}
	w.res.Steps, w.res.Elapsed = w.steps, w.now.Sub(start)
	if w.fail != nil {
		return w.res, w.fail
	}
	return w.res, nil
}

// server is one simulated server.
type server struct {
	idx     int
	name    string
	rank    int
	log     *replication.MemLog
	up      bool
	inc     int // incarnation: a crash ends one
	m       *election.Machine
	n       *replication.Node
	leading bool // m was Leading after the last event
	role    replication.Role
	pinged  time.Time
	// verified is how far this server's log has been checked against
	// the committed entries (invariant 4).
	verified    uint64
	errSeen     bool
	resets      int
	truncations int
}

type evKind uint8

const (
	evTick evKind = iota + 1
	evRequest
	evReply
	evTimeout
	evAnnounce
	evWrite
	evCrash
	evRestart
	evPartition
	evHeal
	evCheck
)

type event struct {
	at    time.Time
	seq   uint64
	kind  evKind
	srv   int // evTick, evRestart, evAnnounce: the server
	inc   int // evTick, evAnnounce: the incarnation it was meant for (evAnnounce: the sender's)
	from  int // evAnnounce: the sender
	req   *request
	reply any
	bully election.Message
}

type reqKind uint8

const (
	rqRepl reqKind = iota + 1
	rqElection
	rqPing
)

// request is a request on its way and its one outcome.
type request struct {
	kind    reqKind
	from    int
	to      int
	fromInc int
	msg     any // a replication message, or the election.Message
	coord   string
	done    bool // the sender got its reply or its failure
}

// write is a client write a leader appended.
type write struct {
	id    string
	srv   int
	inc   int
	epoch uint64
	lsn   uint64
}

type world struct {
	opt     Options
	rng     *rand.Rand
	now     time.Time
	queue   events
	seq     uint64
	steps   int
	servers []*server
	group   []int // partition group of each server; nil: none
	calm    bool  // the quiet end: no more faults or writes
	done    bool  // the quiet end converged

	progress     uint64    // the quiet end: logs' lengths, commits and entries sent, hashed
	progressedAt time.Time // when progress last changed
	// sent counts the entries of the Appends taken and of Fetch replies: a log
	// compared entry by entry with another progresses without changing
	// its length. (A livelock that sends entries for ever is caught by
	// quietLimit.)
	sent uint64

	loss, dup, slow float64

	leaderOf  map[uint64]string   // epoch -> the server that led it (lookups only)
	committed []replication.Entry // committed[L-1]: the entry committed at L
	pending   []*write
	acked     []*write
	writeSeq  int

	res   Result
	fail  *Violation
	trace []string
}

func newWorld(opt Options) *world {
	w := &world{
		opt:      opt,
		rng:      rand.New(rand.NewPCG(uint64(opt.Seed), uint64(opt.Seed)^0x9e3779b97f4a7c15)),
		now:      start,
		leaderOf: map[uint64]string{},
		loss:     opt.LossRate,
		dup:      opt.DupRate,
		slow:     opt.SlowRate,
	}
	w.res.Seed = opt.Seed
	for i := range opt.Servers {
		s := &server{idx: i, name: fmt.Sprintf("s%d", i+1), rank: i + 1, log: &replication.MemLog{}}
		w.hook(s)
		w.servers = append(w.servers, s)
	}
	for _, s := range w.servers {
		w.boot(s)
	}
	w.schedule(event{at: w.now.Add(w.exp(opt.WriteEvery)), kind: evWrite})
	if opt.Crashes {
		w.schedule(event{at: w.now.Add(w.exp(opt.CrashEvery)), kind: evCrash})
	}
	if opt.Partitions {
		w.schedule(event{at: w.now.Add(w.exp(opt.PartitionEvery)), kind: evPartition})
	}
	return w
}

// hook makes s's log report to the checks.
func (w *world) hook(s *server) {
	s.log.OnReset = func() {
		s.verified = 0
		s.resets++
		w.res.Resets++
		w.tracef("%s: log reset", s.name)
	}
	s.log.OnAppend = func(e replication.Entry) {
		if prev, ok := s.log.At(e.LSN - 1); ok && prev.Epoch > e.Epoch {
			w.violate(0, "%s's log goes from epoch %d back to %d at LSN %d", s.name, prev.Epoch, e.Epoch, e.LSN)
		}
	}
	s.log.OnTruncate = func(lsn uint64) {
		s.verified = min(s.verified, lsn)
		s.truncations++
		w.res.Truncations++
		w.tracef("%s: log truncated after %d", s.name, lsn)
	}
	s.log.OnPromise = func(old, p replication.Promise) {
		if p.Epoch < old.Epoch {
			w.violate(5, "%s's promise went from %+v back to %+v", s.name, old, p)
		}
	}
}

// boot starts a new process on s: a new Machine and a new Node over the
// log and promise s kept.
func (w *world) boot(s *server) {
	s.up = true
	var peers []election.Peer
	var names []string
	for _, o := range w.servers {
		peers = append(peers, election.Peer{Name: o.name, Rank: o.rank})
		names = append(names, o.name)
	}
	s.m = election.New(election.DefaultConfig(s.name, s.rank), w.now)
	s.m.SetPeers(peers, w.now)
	cfg := replication.DefaultConfig(s.name, len(w.servers))
	cfg.MaxBatch = w.opt.MaxBatch
	var log replication.Log = s.log
	if w.opt.ResetOnly {
		log = replication.ResetOnly{L: s.log}
	}
	s.n = replication.New(cfg, log, s.log.Promise())
	s.n.SetPeers(names)
	s.leading, s.role, s.pinged, s.errSeen = false, replication.Follower, time.Time{}, false
	w.schedule(event{at: w.now.Add(time.Duration(w.rng.Int64N(int64(TickInterval)))), kind: evTick, srv: s.idx, inc: s.inc})
	w.after(s)
}

// step runs the next event.
func (w *world) step() {
	ev := heap.Pop(&w.queue).(*event)
	w.now = ev.at
	w.steps++
	w.res.Digest = mix(w.res.Digest, uint64(ev.kind), uint64(ev.at.UnixNano()), uint64(ev.srv))
	switch ev.kind {
	case evTick:
		w.tick(ev)
	case evRequest:
		w.arrive(ev.req)
	case evReply:
		w.replied(ev.req, ev.reply)
	case evTimeout:
		w.timedOut(ev.req)
	case evAnnounce:
		w.announced(ev)
	case evWrite:
		w.clientWrite()
	case evCrash:
		w.crash()
	case evRestart:
		if s := w.servers[ev.srv]; !s.up && !w.calm {
			w.tracef("%s: restart", s.name)
			w.boot(s)
		}
	case evPartition:
		w.partition()
	case evHeal:
		w.heal()
	case evCheck:
		w.checkQuiet()
	}
}

func (w *world) tick(ev *event) {
	s := w.servers[ev.srv]
	if !s.up || s.inc != ev.inc {
		return
	}
	s.m.Tick(w.now)
	s.n.Tick(w.now)
	if coord := s.m.Coordinator(); coord != "" && coord != s.name && w.now.Sub(s.pinged) >= PingInterval {
		s.pinged = w.now
		w.request(s, w.index(coord), rqPing, nil, coord)
	}
	w.after(s)
	jitter := time.Duration(w.rng.Int64N(int64(2 * time.Millisecond)))
	w.schedule(event{at: w.now.Add(TickInterval + jitter), kind: evTick, srv: s.idx, inc: s.inc})
}

// after follows up on whatever s's machines decided, as the adapter's
// afterLocked does, then checks the invariants that s may have broken.
func (w *world) after(s *server) {
	if !s.up {
		return
	}
	leading := s.m.State() == election.Leading
	if leading && !s.leading {
		w.res.Elections++
		w.tracef("%s: Bully coordinator, campaigns", s.name)
		s.n.Campaign(w.now)
	}
	if !leading && s.leading {
		w.tracef("%s: follows %s", s.name, s.m.Coordinator())
		s.n.Follow()
	}
	s.leading = leading
	for _, m := range s.m.Outbox() {
		w.sendBully(s, m)
	}
	for _, out := range s.n.Outbox() {
		w.request(s, w.index(out.To), rqRepl, out.Msg, "")
	}
	w.check(s)
}

// --- the network ---

func (w *world) sendBully(s *server, m election.Message) {
	switch m.Kind {
	case election.Election:
		w.request(s, w.index(m.To), rqElection, m, "")
	case election.Coordinator:
		for _, o := range w.servers {
			if o != s {
				w.res.Messages++
				w.transmit(event{kind: evAnnounce, srv: o.idx, from: s.idx, inc: s.inc, bully: m})
			}
		}
	}
}

// request sends a request from s, with its timeout.
func (w *world) request(s *server, to int, kind reqKind, msg any, coord string) {
	r := &request{kind: kind, from: s.idx, to: to, fromInc: s.inc, msg: msg, coord: coord}
	w.res.Messages++
	if w.opt.Trace && kind == rqRepl {
		w.tracef("%s -> %s %s", s.name, w.servers[to].name, describe(msg))
	}
	w.transmit(event{kind: evRequest, req: r})
	if w.rng.Float64() < w.dup {
		w.res.Duplicated++
		w.transmit(event{kind: evRequest, req: r})
	}
	w.schedule(event{at: w.now.Add(RequestTimeout), kind: evTimeout, req: r})
}

// transmit puts a message on the network: lost, or delivered after a
// random delay.
func (w *world) transmit(ev event) {
	if w.rng.Float64() < w.loss {
		w.res.Lost++
		return
	}
	d := time.Millisecond + time.Duration(w.rng.Int64N(int64(w.opt.MaxDelay)))
	if w.rng.Float64() < w.slow {
		d += time.Duration(w.rng.Int64N(int64(slowDelay)))
	}
	ev.at = w.now.Add(d)
	w.schedule(ev)
}

func (w *world) reachable(a, b int) bool { return w.group == nil || w.group[a] == w.group[b] }

// alive reports whether a message from an incarnation of a server still
// gets anywhere: one from a crashed incarnation is lost, half the time.
func (w *world) alive(from, inc int) bool {
	s := w.servers[from]
	return (s.up && s.inc == inc) || w.rng.IntN(2) == 0
}

// arrive delivers a request (one copy of it) to its receiver, which
// answers.
func (w *world) arrive(r *request) {
	rcv := w.servers[r.to]
	if !rcv.up || !w.reachable(r.from, r.to) || !w.alive(r.from, r.fromInc) {
		return
	}
	var reply any
	switch r.kind {
	case rqRepl:
		switch m := r.msg.(type) {
		case replication.Prepare:
			reply = rcv.n.HandlePrepare(m)
		case replication.Append:
			r := rcv.n.HandleAppend(m)
			if r.OK {
				w.sent += uint64(len(m.Entries))
			}
			reply = r
		case replication.Fetch:
			r := rcv.n.HandleFetch(m)
			w.sent += uint64(len(r.Entries))
			reply = r
		}
		if w.opt.Trace {
			w.tracef("%s handles %s from %s: %s", rcv.name, describe(r.msg), w.servers[r.from].name, describe(reply))
		}
	case rqElection:
		rcv.m.Step(r.msg.(election.Message), w.now)
	}
	w.after(rcv)
	w.transmit(event{kind: evReply, req: r, reply: reply})
}

// replied delivers a reply to the request's sender.
func (w *world) replied(r *request, reply any) {
	s := w.servers[r.from]
	if !s.up || s.inc != r.fromInc || !w.reachable(r.to, r.from) {
		return
	}
	if r.done {
		if r.kind == rqRepl && w.opt.DupReplies {
			s.n.Step(reply, w.now)
			w.after(s)
		}
		return
	}
	r.done = true
	to := w.servers[r.to]
	switch r.kind {
	case rqRepl:
		if w.opt.Trace {
			w.tracef("%s gets %s", s.name, describe(reply))
		}
		s.n.Step(reply, w.now)
	case rqElection:
		s.m.Heard(to.name, w.now)
		s.m.Step(election.Message{Kind: election.Answer, From: to.name, Rank: to.rank, To: s.name}, w.now)
	case rqPing:
		s.m.Heard(r.coord, w.now)
	}
	w.after(s)
}

// timedOut fails a request that got no reply in time.
func (w *world) timedOut(r *request) {
	if r.done {
		return
	}
	r.done = true
	s := w.servers[r.from]
	if !s.up || s.inc != r.fromInc {
		return
	}
	to := w.servers[r.to].name
	switch r.kind {
	case rqRepl:
		w.tracef("%s: no reply from %s to %s", s.name, to, describe(r.msg))
		s.n.Failed(to, r.msg, w.now)
	case rqElection:
		s.m.Unreachable(to, w.now)
	case rqPing:
		s.m.Unreachable(r.coord, w.now)
	}
	w.after(s)
}

func (w *world) announced(ev *event) {
	rcv := w.servers[ev.srv]
	if !rcv.up || !w.reachable(ev.from, ev.srv) || !w.alive(ev.from, ev.inc) {
		return
	}
	rcv.m.Step(ev.bully, w.now)
	w.after(rcv)
}

// --- clients and faults ---

// randomUp returns a server that is up, chosen by the seeded generator
// (nil, and no draw, when none is).
func (w *world) randomUp() *server {
	var up []*server
	for _, s := range w.servers {
		if s.up {
			up = append(up, s)
		}
	}
	if len(up) == 0 {
		return nil
	}
	return up[w.rng.IntN(len(up))]
}

func (w *world) clientWrite() {
	if w.calm {
		return
	}
	w.schedule(event{at: w.now.Add(w.exp(w.opt.WriteEvery)), kind: evWrite})
	s := w.randomUp()
	if s == nil {
		return
	}
	w.res.Writes++
	if s.n.Role() != replication.Leader {
		w.res.Refused++
		return
	}
	w.writeSeq++
	id := fmt.Sprintf("w%d", w.writeSeq)
	e := s.log.Write([]byte(id))
	if e.Epoch != s.n.Epoch() {
		w.violate(0, "%s leads epoch %d but its log stamps writes with epoch %d", s.name, s.n.Epoch(), e.Epoch)
	}
	wr := &write{id: id, srv: s.idx, inc: s.inc, epoch: s.n.Epoch(), lsn: e.LSN}
	w.tracef("%s: client write %s at %d", s.name, id, e.LSN)
	s.n.LogGrew(w.now)
	if w.opt.AckOnAppend {
		w.ack(wr)
	} else {
		w.pending = append(w.pending, wr)
	}
	w.after(s)
}

func (w *world) crash() {
	if w.calm {
		return
	}
	w.schedule(event{at: w.now.Add(w.exp(w.opt.CrashEvery)), kind: evCrash})
	s := w.randomUp()
	if s == nil {
		return
	}
	w.res.Crashes++
	w.tracef("%s: crash", s.name)
	s.up, s.m, s.n = false, nil, nil
	s.inc++
	s.log.Crash()
	w.checkPending()
	w.schedule(event{at: w.now.Add(100*time.Millisecond + time.Duration(w.rng.Int64N(int64(4*time.Second)))), kind: evRestart, srv: s.idx})
}

func (w *world) partition() {
	if w.calm {
		return
	}
	w.group = make([]int, len(w.servers))
	for i := range w.group {
		w.group[i] = w.rng.IntN(2)
	}
	w.res.Partitions++
	w.tracef("partition %v", w.group)
	w.schedule(event{at: w.now.Add(200*time.Millisecond + time.Duration(w.rng.Int64N(int64(5*time.Second)))), kind: evHeal})
}

func (w *world) heal() {
	if w.group != nil {
		w.tracef("heal")
	}
	w.group = nil
	if !w.calm && w.opt.Partitions {
		w.schedule(event{at: w.now.Add(w.exp(w.opt.PartitionEvery)), kind: evPartition})
	}
}

// quiet ends the faults: the network heals and becomes reliable (but
// still delays and reorders), every server runs, no client writes; the
// run goes on until the cluster has converged.
func (w *world) quiet() {
	w.calm = true
	w.loss, w.dup, w.slow = 0, 0, 0
	w.heal()
	for _, s := range w.servers {
		if !s.up {
			w.tracef("%s: restart (quiet end)", s.name)
			w.boot(s)
		}
	}
	begin := w.now
	w.progressedAt = w.now
	w.schedule(event{at: w.now.Add(checkEvery), kind: evCheck})
	for !w.done && w.fail == nil {
		if w.now.Sub(begin) > quietLimit || w.now.Sub(w.progressedAt) > stuckLimit {
			w.violate(3, "the cluster did not converge in the quiet end (%v, the last %v without progress): %s",
				w.now.Sub(begin).Round(time.Millisecond), w.now.Sub(w.progressedAt).Round(time.Millisecond), w.state())
			return
		}
		w.step()
	}
	w.res.QuietAfter = w.now.Sub(begin)
}

// --- the checks ---

// violate records the first invariant broken.
func (w *world) violate(inv int, format string, args ...any) {
	if w.fail != nil {
		return
	}
	w.fail = &Violation{Seed: w.opt.Seed, Invariant: inv, Step: w.steps, At: w.now.Sub(start), What: fmt.Sprintf(format, args...)}
	if w.opt.Trace {
		w.fail.Trace = slices.Clone(w.trace)
	}
}

// check checks what s's last event may have broken.
func (w *world) check(s *server) {
	if err := s.n.Err(); err != nil && !s.errSeen {
		s.errSeen = true
		w.violate(0, "%s's Node misused its log: %v", s.name, err)
	}
	role := s.n.Role()
	if role != s.role {
		w.tracef("%s: %v -> %v (epoch %d, log %+v, commit %d)", s.name, s.role, role, s.n.Epoch(), s.log.Last(), s.n.Commit())
		s.role = role
	}
	if role == replication.Leader {
		e := s.n.Epoch()
		if who, ok := w.leaderOf[e]; !ok {
			w.leaderOf[e] = s.name
			w.res.Leaders++
		} else if who != s.name {
			w.violate(1, "%s and %s both led epoch %d", who, s.name, e)
		}
	}
	// Invariant 4: what s commits is what was committed.
	c := min(s.n.Commit(), uint64(s.log.Len()))
	for lsn := s.verified + 1; lsn <= c; lsn++ {
		e, _ := s.log.At(lsn)
		if lsn > uint64(len(w.committed)) {
			w.committed = append(w.committed, e)
		} else if want := w.committed[lsn-1]; !e.Equal(want) {
			w.violate(4, "%s commits %s at LSN %d, where %s was committed", s.name, describeEntry(e), lsn, describeEntry(want))
		}
	}
	s.verified = max(s.verified, c)
	w.checkPending()
}

// checkPending acknowledges the writes that are committed and fails
// those whose leader changed.
func (w *world) checkPending() {
	w.pending = slices.DeleteFunc(w.pending, func(wr *write) bool {
		s := w.servers[wr.srv]
		if !s.up || s.inc != wr.inc || s.n.Role() != replication.Leader || s.n.Epoch() != wr.epoch {
			w.res.Failed++
			return true
		}
		if s.n.Commit() >= wr.lsn {
			w.ack(wr)
			return true
		}
		return false
	})
}

// ack acknowledges a write: invariant 2.
func (w *world) ack(wr *write) {
	s := w.servers[wr.srv]
	e, ok := s.log.At(wr.lsn)
	if !ok || string(e.Data) != wr.id {
		w.violate(0, "%s acknowledges %s at LSN %d, but its log holds %s there", s.name, wr.id, wr.lsn, describeEntry(e))
		return
	}
	holders := 0
	for _, o := range w.servers {
		if got, ok := o.log.At(wr.lsn); ok && got.Equal(e) {
			holders++
		}
	}
	if holders < replication.Majority(len(w.servers)) && !w.opt.NoDurabilityCheck {
		w.violate(2, "%s acknowledges %s at LSN %d, durable on %d of %d servers only", s.name, wr.id, wr.lsn, holders, len(w.servers))
	}
	w.res.Acked++
	w.acked = append(w.acked, wr)
	w.tracef("%s: acknowledges %s at %d (on %d servers)", s.name, wr.id, wr.lsn, holders)
}

// checkQuiet looks at the quiet end for convergence, and checks
// invariant 3 once it has.
func (w *world) checkQuiet() {
	w.schedule(event{at: w.now.Add(checkEvery), kind: evCheck})
	progress := w.sent
	for _, s := range w.servers {
		progress = mix(progress, uint64(s.log.Len()), s.n.Commit())
	}
	if progress != w.progress {
		w.progress, w.progressedAt = progress, w.now
	}
	top := w.servers[len(w.servers)-1]
	if top.m.State() != election.Leading || top.n.Role() != replication.Leader || top.n.Commit() != top.log.Last().LSN || len(w.pending) > 0 {
		return
	}
	for _, s := range w.servers[:len(w.servers)-1] {
		if s.m.Coordinator() != top.name || s.n.Role() != replication.Follower || s.n.Commit() != top.n.Commit() || !slices.EqualFunc(s.log.All(), top.log.All(), replication.Entry.Equal) {
			return
		}
	}
	w.done = true
	w.res.FinalLSN, w.res.Coordinator = top.log.Last().LSN, top.name
	seen := map[string][]uint64{}
	for _, e := range top.log.All() {
		if d := string(e.Data); d != "noop" {
			seen[d] = append(seen[d], e.LSN)
		}
	}
	for _, wr := range w.acked {
		if lsns := seen[wr.id]; len(lsns) != 1 || lsns[0] != wr.lsn {
			w.violate(3, "acknowledged write %s (LSN %d) is at LSNs %v of the final log: %s", wr.id, wr.lsn, lsns, w.state())
			return
		}
	}
	for id := 1; id <= w.writeSeq; id++ {
		if lsns := seen[fmt.Sprintf("w%d", id)]; len(lsns) > 1 {
			w.violate(3, "write w%d is in the final log %d times (LSNs %v)", id, len(lsns), lsns)
			return
		}
	}
	for _, s := range w.servers {
		w.check(s)
	}
}

// state describes every server, for a violation's message.
func (w *world) state() string {
	var b strings.Builder
	for _, s := range w.servers {
		if !s.up {
			fmt.Fprintf(&b, "[%s down, log %+v] ", s.name, s.log.Last())
			continue
		}
		fmt.Fprintf(&b, "[%s %v coord=%q, %v promise %+v, log %+v, %d resets, %d truncations, commit %d] ",
			s.name, s.m.State(), s.m.Coordinator(), s.n.Role(), s.log.Promise(), s.log.Last(), s.resets, s.truncations, s.n.Commit())
	}
	return strings.TrimSpace(b.String())
}

// --- helpers ---

func (w *world) schedule(ev event) {
	w.seq++
	ev.seq = w.seq
	heap.Push(&w.queue, &ev)
}

// exp draws an exponentially distributed duration of the given mean.
func (w *world) exp(mean time.Duration) time.Duration {
	return time.Duration(w.rng.ExpFloat64() * float64(mean))
}

func (w *world) index(name string) int {
	for i, s := range w.servers {
		if s.name == name {
			return i
		}
	}
	panic("sim: unknown server " + name)
}

func (w *world) tracef(format string, args ...any) {
	if !w.opt.Trace {
		return
	}
	const keep = 300
	if len(w.trace) == keep {
		w.trace = w.trace[1:]
	}
	w.trace = append(w.trace, fmt.Sprintf("%9v  ", w.now.Sub(start))+fmt.Sprintf(format, args...))
}

// mix hashes xs into h.
func mix(h uint64, xs ...uint64) uint64 {
	for _, x := range xs {
		h = splitmix(h ^ splitmix(x))
	}
	return h
}

// splitmix is SplitMix64's finalizer: every bit of x moves every bit of
// the result.
func splitmix(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ x>>30) * 0xbf58476d1ce4e5b9
	x = (x ^ x>>27) * 0x94d049bb133111eb
	return x ^ x>>31
}

func describeEntry(e replication.Entry) string {
	return fmt.Sprintf("%d:%d:%s", e.LSN, e.Epoch, e.Data)
}

func describe(msg any) string {
	switch m := msg.(type) {
	case replication.Append:
		var lsns []string
		for _, e := range m.Entries {
			lsns = append(lsns, fmt.Sprintf("%d:%d", e.LSN, e.Epoch))
		}
		return fmt.Sprintf("Append{e%d %s prev %d:%d [%s] commit %d}", m.Epoch, m.Leader, m.Prev.LSN, m.Prev.Epoch, strings.Join(lsns, " "), m.Commit)
	case replication.FetchReply:
		return fmt.Sprintf("FetchReply{%s diverged=%v %d entries last %+v}", m.From, m.Diverged, len(m.Entries), m.Last)
	case nil:
		return "-"
	}
	return fmt.Sprintf("%T%+v", msg, msg)
}

// events is a heap of events by time, then by the order they were
// scheduled in.
type events []*event

func (q events) Len() int { return len(q) }
func (q events) Less(i, j int) bool {
	if !q[i].at.Equal(q[j].at) {
		return q[i].at.Before(q[j].at)
	}
	return q[i].seq < q[j].seq
}
func (q events) Swap(i, j int) { q[i], q[j] = q[j], q[i] }
func (q *events) Push(x any)   { *q = append(*q, x.(*event)) }
func (q *events) Pop() any {
	old := *q
	ev := old[len(old)-1]
	*q = old[:len(old)-1]
	return ev
}
