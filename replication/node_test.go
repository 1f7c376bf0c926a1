package replication

import (
	"fmt"
	"slices"
	"testing"
	"time"
)

// The tests drive Nodes by hand: a request a node wants sent waits in a
// queue until the test delivers it (the receiver's Handle*, then the
// reply to the sender's Step) or drops it (the sender's Failed). Time is
// injected and moves only when the test says so.

var t0 = time.Date(2024, 1, 1, 12, 0, 0, 0, time.UTC)

// request is one Outgoing on its way, with its sender.
type request struct {
	from string
	Outgoing
}

func (r request) String() string { return fmt.Sprintf("%s->%s %T%+v", r.from, r.To, r.Msg, r.Msg) }

// cluster is a handful of Nodes over memLogs and a queue of requests.
type cluster struct {
	t     *testing.T
	now   time.Time
	names []string
	nodes map[string]*Node
	logs  map[string]*memLog
	queue []request
	// resetOnly gives the Nodes their logs without TruncateAfter (as the
	// store is today): a divergent log is emptied.
	resetOnly bool
}

// newCluster starts n followers s1..sn with promise zero and empty logs;
// tweak, if not nil, changes their Config.
func newCluster(t *testing.T, n int, tweak func(*Config)) *cluster {
	return newClusterOf(t, n, tweak, false)
}

// newClusterOf is newCluster, with Reset-only logs if resetOnly.
func newClusterOf(t *testing.T, n int, tweak func(*Config), resetOnly bool) *cluster {
	t.Helper()
	c := &cluster{t: t, now: t0, nodes: map[string]*Node{}, logs: map[string]*memLog{}, resetOnly: resetOnly}
	for i := 1; i <= n; i++ {
		c.names = append(c.names, fmt.Sprintf("s%d", i))
	}
	for _, name := range c.names {
		cfg := DefaultConfig(name, n)
		if tweak != nil {
			tweak(&cfg)
		}
		c.logs[name] = newMemLog()
		c.nodes[name] = New(cfg, c.log(name), Promise{})
		c.nodes[name].SetPeers(c.names)
	}
	return c
}

// restart replaces name's Node with a new one over the same log and
// promise, as a process restart does.
func (c *cluster) restart(name string) {
	cfg := c.nodes[name].cfg
	c.nodes[name] = New(cfg, c.log(name), c.logs[name].promise)
	c.nodes[name].SetPeers(c.names)
	c.queue = slices.DeleteFunc(c.queue, func(r request) bool { return r.from == name })
}

// log returns the Log name's Node works on.
func (c *cluster) log(name string) Log {
	if c.resetOnly {
		return ResetOnly{L: c.logs[name].MemLog}
	}
	return c.logs[name]
}

// bothModes runs f with Truncater logs, then with Reset-only ones.
func bothModes(t *testing.T, f func(t *testing.T, resetOnly bool)) {
	t.Run("truncate", func(t *testing.T) { f(t, false) })
	t.Run("reset", func(t *testing.T) { f(t, true) })
}

// requireRepairs checks how name's log was repaired: emptied once with a
// Reset-only log, else truncated once and never emptied.
func (c *cluster) requireRepairs(name string) {
	c.t.Helper()
	l := c.logs[name]
	if c.resetOnly && (l.resets != 1 || l.truncations != 0) || !c.resetOnly && (l.resets != 0 || l.truncations != 1) {
		c.t.Fatalf("%s's log was reset %d times and truncated %d times", name, l.resets, l.truncations)
	}
}

// collect moves every node's Outbox into the queue.
func (c *cluster) collect() {
	for _, name := range c.names {
		for _, out := range c.nodes[name].Outbox() {
			c.queue = append(c.queue, request{from: name, Outgoing: out})
		}
	}
}

// handle gives msg to to's Handle* and returns the reply.
func (c *cluster) handle(to string, msg any) any {
	n := c.nodes[to]
	switch m := msg.(type) {
	case Prepare:
		return n.HandlePrepare(m)
	case Append:
		return n.HandleAppend(m)
	case Fetch:
		return n.HandleFetch(m)
	}
	c.t.Fatalf("unknown request %T", msg)
	return nil
}

// take removes and returns the first queued request that match accepts.
func (c *cluster) take(match func(request) bool) (request, bool) {
	c.collect()
	for i, r := range c.queue {
		if match(r) {
			c.queue = slices.Delete(c.queue, i, i+1)
			return r, true
		}
	}
	return request{}, false
}

// to matches the requests from one server to another of one kind (a
// value of the message type, such as Append{}); "" matches any server.
func to(from, dest string, kind any) func(request) bool {
	return func(r request) bool {
		return (from == "" || r.from == from) && (dest == "" || r.To == dest) && fmt.Sprintf("%T", r.Msg) == fmt.Sprintf("%T", kind)
	}
}

// deliver delivers the first request match accepts and feeds the reply to
// the sender. It fails the test when there is none.
func (c *cluster) deliver(match func(request) bool) any {
	c.t.Helper()
	r, ok := c.take(match)
	if !ok {
		c.t.Fatalf("no such request queued; queue: %v", c.queue)
	}
	reply := c.handle(r.To, r.Msg)
	c.nodes[r.from].Step(reply, c.now)
	return reply
}

// drop loses every queued request match accepts: its sender's Failed.
func (c *cluster) drop(match func(request) bool) int {
	dropped := 0
	for {
		r, ok := c.take(match)
		if !ok {
			return dropped
		}
		c.nodes[r.from].Failed(r.To, r.Msg, c.now)
		dropped++
	}
}

// run delivers requests until none is left; a request from or to a
// server in down is dropped instead.
func (c *cluster) run(down ...string) {
	c.t.Helper()
	for i := 0; ; i++ {
		if i > 10000 {
			c.t.Fatalf("more than 10000 requests without time passing")
		}
		c.collect()
		if len(c.queue) == 0 {
			return
		}
		r := c.queue[0]
		c.queue = c.queue[1:]
		if slices.Contains(down, r.from) || slices.Contains(down, r.To) {
			c.nodes[r.from].Failed(r.To, r.Msg, c.now)
			continue
		}
		c.nodes[r.from].Step(c.handle(r.To, r.Msg), c.now)
	}
}

// tick moves time by d and ticks every node not in down.
func (c *cluster) tick(d time.Duration, down ...string) {
	c.now = c.now.Add(d)
	for _, name := range c.names {
		if !slices.Contains(down, name) {
			c.nodes[name].Tick(c.now)
		}
	}
}

// settle lets d pass in steps of 50ms, delivering everything after each.
func (c *cluster) settle(d time.Duration, down ...string) {
	c.t.Helper()
	for end := c.now.Add(d); c.now.Before(end); {
		c.tick(50*time.Millisecond, down...)
		c.run(down...)
	}
}

// write is a client write on name, which must lead; it returns the LSN.
func (c *cluster) write(name, data string) uint64 {
	c.t.Helper()
	n := c.nodes[name]
	if n.Role() != Leader {
		c.t.Fatalf("write on %s, which is a %v", name, n.Role())
	}
	lsn := c.logs[name].write(data)
	n.LogGrew(c.now)
	return lsn
}

// lead makes name the leader with every other server up.
func (c *cluster) lead(name string) {
	c.t.Helper()
	c.nodes[name].Campaign(c.now)
	c.run()
	if c.nodes[name].Role() != Leader {
		c.t.Fatalf("%s is a %v after campaigning", name, c.nodes[name].Role())
	}
}

func (c *cluster) requireRole(name string, want Role) {
	c.t.Helper()
	if got := c.nodes[name].Role(); got != want {
		c.t.Fatalf("%s is a %v, want %v", name, got, want)
	}
}

func (c *cluster) requireLog(name string, want ...string) {
	c.t.Helper()
	if got := c.logs[name].data(); !slices.Equal(got, want) {
		c.t.Fatalf("%s's log is %q, want %q", name, got, want)
	}
}

// requireSameLogs fails unless every log equals name's.
func (c *cluster) requireSameLogs(name string) {
	c.t.Helper()
	for _, other := range c.names {
		if !slices.Equal(c.logs[other].data(), c.logs[name].data()) {
			c.t.Fatalf("%s's log %q differs from %s's %q", other, c.logs[other].data(), name, c.logs[name].data())
		}
	}
}

// history gives each named server the same log built with add: pairs
// of epoch and data.
func (c *cluster) history(names []string, promise Promise, entries ...any) {
	for _, name := range names {
		l := c.logs[name]
		for i := 0; i < len(entries); i += 2 {
			l.addEntry(uint64(entries[i].(int)), entries[i+1].(string))
		}
		l.promise = promise
		c.restart(name)
	}
}

func TestSingleNodeLeadsAtOnce(t *testing.T) {
	c := newCluster(t, 1, nil)
	n := c.nodes["s1"]
	n.Campaign(c.now)
	c.requireRole("s1", Leader)
	if n.Epoch() != 1 || n.Leader() != "s1" || c.logs["s1"].promise != (Promise{Epoch: 1, Leader: "s1"}) {
		t.Fatalf("epoch %d leader %q promise on disk %+v, want 1, s1, {1 s1}", n.Epoch(), n.Leader(), c.logs["s1"].promise)
	}
	if n.Commit() != 1 {
		t.Fatalf("commit %d after leading, want 1 (its noop)", n.Commit())
	}
	for i, data := range []string{"a", "b", "c"} {
		lsn := c.write("s1", data)
		if lsn != uint64(i+2) || n.Commit() != lsn {
			t.Fatalf("write %s at %d, commit %d: alone, a write commits at once", data, lsn, n.Commit())
		}
	}
	if out := n.Outbox(); len(out) != 0 {
		t.Fatalf("a node alone sent %v", out)
	}
	c.requireLog("s1", "1:noop", "1:a", "1:b", "1:c")
}

func TestThreeNodesLeadAndCommitOnAMajority(t *testing.T) {
	c := newCluster(t, 3, nil)
	s1 := c.nodes["s1"]
	s1.Campaign(c.now)
	c.requireRole("s1", Candidate)
	if len(c.logs["s1"].entries) != 0 {
		t.Fatalf("a candidate wrote %v before it had a majority", c.logs["s1"].data())
	}
	// s2 promises: with itself, s1 has a majority and leads.
	c.deliver(to("s1", "s2", Prepare{}))
	c.requireRole("s1", Leader)
	if c.logs["s2"].promise != (Promise{Epoch: 1, Leader: "s1"}) {
		t.Fatalf("s2 keeps promise %+v", c.logs["s2"].promise)
	}
	c.requireLog("s1", "1:noop")
	if s1.Commit() != 0 {
		t.Fatalf("commit %d while only the leader holds its noop", s1.Commit())
	}
	// s3's promise arrives late: it changes nothing.
	c.deliver(to("s1", "s3", Prepare{}))
	c.requireRole("s1", Leader)

	lsn := c.write("s1", "a")
	if s1.Commit() != 0 {
		t.Fatalf("commit %d with no follower holding anything", s1.Commit())
	}
	// s2 gets the noop (the write was appended after that Append left).
	c.deliver(to("s1", "s2", Append{}))
	if s1.Commit() != 1 {
		t.Fatalf("commit %d once s2 holds the noop, want 1", s1.Commit())
	}
	c.deliver(to("s1", "s2", Append{}))
	if s1.Commit() != lsn {
		t.Fatalf("commit %d once s2 holds the write at %d", s1.Commit(), lsn)
	}
	c.requireLog("s2", "1:noop", "1:a")
	c.requireLog("s3")
	// s3 loses everything for a while: nothing is held up.
	c.drop(to("s1", "s3", Append{}))
	lsn = c.write("s1", "b")
	c.run("s3")
	if s1.Commit() != lsn {
		t.Fatalf("commit %d, want %d: s1 and s2 are a majority", s1.Commit(), lsn)
	}
	// s3 is back: it gets everything on the next retry, and followers learn
	// the commit LSN with the next Append.
	c.settle(500 * time.Millisecond)
	c.requireSameLogs("s1")
	for _, name := range []string{"s2", "s3"} {
		c.requireRole(name, Follower)
		if n := c.nodes[name]; n.Commit() != lsn || n.Leader() != "s1" || n.Epoch() != 1 {
			t.Fatalf("%s: commit %d leader %q epoch %d", name, n.Commit(), n.Leader(), n.Epoch())
		}
	}
}

func TestFollowerBehindGetsTheMissingEntries(t *testing.T) {
	c := newCluster(t, 3, func(cfg *Config) { cfg.MaxBatch = 2 })
	// s1 and s2 hold five entries of epoch 1, s3 only the first two.
	c.history([]string{"s1", "s2"}, Promise{1, "s1"}, 1, "noop", 1, "a", 1, "b", 1, "c", 1, "d")
	c.history([]string{"s3"}, Promise{1, "s1"}, 1, "noop", 1, "a")
	c.nodes["s1"].Campaign(c.now)
	c.deliver(to("s1", "s2", Prepare{}))
	c.requireRole("s1", Leader)
	c.drop(to("s1", "s3", Prepare{}))
	// The first Append to s3 follows LSN 5, which s3 lacks: it answers with
	// its end, and s1 backs up and sends from LSN 3, two at a time.
	r := c.deliver(to("s1", "s3", Append{})).(AppendReply)
	if r.OK || r.Last != (Pos{2, 1}) {
		t.Fatalf("s3 answered %+v to an Append after LSN 5", r)
	}
	m, _ := c.take(to("s1", "s3", Append{}))
	if app := m.Msg.(Append); app.Prev != (Pos{2, 1}) || len(app.Entries) != 2 || app.Entries[0].LSN != 3 {
		t.Fatalf("after backing up s1 sent %+v", app)
	}
	c.nodes["s1"].Step(c.handle("s3", m.Msg), c.now)
	c.run()
	c.requireSameLogs("s1")
	c.requireLog("s3", "1:noop", "1:a", "1:b", "1:c", "1:d", "2:noop")
	if c.logs["s3"].resets != 0 {
		t.Fatalf("s3, behind but not divergent, was reset")
	}
}

func TestDeposedLeaderCannotCommit(t *testing.T) {
	c := newCluster(t, 3, nil)
	c.lead("s1")
	c.write("s1", "a")
	c.run()
	commit := c.nodes["s1"].Commit()
	// s3 campaigns with epoch 2 and wins s2's promise; s1 hears nothing.
	c.nodes["s3"].Campaign(c.now)
	c.deliver(to("s3", "s2", Prepare{}))
	c.drop(to("s3", "s1", Prepare{}))
	c.requireRole("s3", Leader)
	c.requireRole("s1", Leader) // it does not know yet
	lsn := c.write("s1", "lost")
	// s1's Appends are refused: s2 and s3 promised epoch 2.
	for _, dest := range []string{"s2", "s3"} {
		r := c.deliver(to("s1", dest, Append{})).(AppendReply)
		if r.OK || r.Epoch != 2 {
			t.Fatalf("%s answered %+v to the deposed leader", dest, r)
		}
	}
	c.requireRole("s1", Follower)
	if got := c.nodes["s1"].Commit(); got != commit || got >= lsn {
		t.Fatalf("the deposed leader's commit moved from %d to %d", commit, got)
	}
	// s3's Appends reset s1, whose write of epoch 1 was never committed.
	c.run()
	c.requireSameLogs("s3")
	if slices.Contains(c.logs["s1"].data(), "1:lost") {
		t.Fatalf("the deposed leader's write survived: %q", c.logs["s1"].data())
	}
	c.requireLog("s3", "1:noop", "1:a", "2:noop")
}

func TestDivergentFollowerIsRepaired(t *testing.T) {
	bothModes(t, func(t *testing.T, resetOnly bool) {
		c := newClusterOf(t, 3, nil, resetOnly)
		// s1 led epoch 1 and wrote x, which only it holds.
		c.history([]string{"s1"}, Promise{1, "s1"}, 1, "noop", 1, "x")
		c.history([]string{"s2", "s3"}, Promise{1, "s1"}, 1, "noop")
		c.nodes["s2"].Campaign(c.now)
		c.deliver(to("s2", "s3", Prepare{}))
		c.drop(to("s2", "s1", Prepare{}))
		c.requireRole("s2", Leader)
		c.write("s2", "y")
		// s1's entry 2 is of epoch 1 where s2 has its noop of epoch 2. With
		// a Truncater, x alone goes and the noop takes its place; a
		// Reset-only log is emptied and s2 sends everything again.
		r := c.deliver(to("s2", "s1", Append{})).(AppendReply)
		if resetOnly {
			if r.OK || r.Last != (Pos{}) {
				t.Fatalf("s1 answered %+v; want to be sent everything", r)
			}
			c.requireLog("s1")
		} else {
			if !r.OK || r.Last != (Pos{2, 2}) {
				t.Fatalf("s1 answered %+v; want OK up to (2, 2)", r)
			}
			c.requireLog("s1", "1:noop", "2:noop")
		}
		c.requireRepairs("s1")
		c.run()
		c.requireSameLogs("s2")
		c.requireLog("s1", "1:noop", "2:noop", "2:y")
	})
}

func TestCandidateBehindFetchesBeforeLeading(t *testing.T) {
	c := newCluster(t, 3, func(cfg *Config) { cfg.MaxBatch = 1 })
	c.history([]string{"s1", "s3"}, Promise{1, "s2"}, 1, "noop")
	c.history([]string{"s2"}, Promise{1, "s2"}, 1, "noop", 1, "a", 1, "b")
	c.nodes["s1"].Campaign(c.now)
	c.drop(to("s1", "s3", Prepare{}))
	c.deliver(to("s1", "s2", Prepare{}))
	// A majority promised, but s2 holds more: s1 copies it, one entry at a
	// time, before it leads.
	for _, want := range []uint64{2, 3} {
		c.requireRole("s1", Candidate)
		if len(c.logs["s1"].entries) != int(want-1) {
			t.Fatalf("s1 holds %q before fetching LSN %d", c.logs["s1"].data(), want)
		}
		c.deliver(to("s1", "s2", Fetch{}))
	}
	c.requireRole("s1", Leader)
	c.requireLog("s1", "1:noop", "1:a", "1:b", "2:noop")
	c.run()
	c.requireSameLogs("s1")
}

func TestCandidateDivergentFromTheBestIsRepaired(t *testing.T) {
	bothModes(t, func(t *testing.T, resetOnly bool) {
		c := newClusterOf(t, 3, nil, resetOnly)
		// s1 holds an uncommitted x of epoch 1; s2 led epoch 2 since.
		c.history([]string{"s1"}, Promise{1, "s1"}, 1, "noop", 1, "x")
		c.history([]string{"s2"}, Promise{2, "s2"}, 1, "noop", 2, "noop", 2, "a")
		c.history([]string{"s3"}, Promise{2, "s2"}, 1, "noop", 2, "noop")
		// s1 has never heard of epoch 2: it asks for 2 and is refused; its
		// campaign times out and it asks for 3.
		c.nodes["s1"].Campaign(c.now)
		c.run()
		c.tick(time.Second)
		c.run()
		c.requireRole("s1", Leader)
		c.requireRepairs("s1")
		c.requireLog("s1", "1:noop", "2:noop", "2:a", "3:noop")
		c.run()
		c.requireSameLogs("s1")
	})
}

func TestTwoCandidatesOfOneEpochCannotBothLead(t *testing.T) {
	c := newCluster(t, 3, nil)
	c.nodes["s1"].Campaign(c.now)
	c.nodes["s2"].Campaign(c.now)
	if c.nodes["s1"].Epoch() != 1 || c.nodes["s2"].Epoch() != 1 {
		t.Fatalf("epochs %d and %d, want both 1", c.nodes["s1"].Epoch(), c.nodes["s2"].Epoch())
	}
	// s3 promises to the first that reaches it; s1 and s2 refuse each
	// other.
	c.deliver(to("s2", "s3", Prepare{}))
	c.deliver(to("s1", "s3", Prepare{}))
	c.deliver(to("s1", "s2", Prepare{}))
	c.deliver(to("s2", "s1", Prepare{}))
	c.requireRole("s2", Leader)
	c.requireRole("s1", Candidate)
	if p := c.logs["s1"].promise; p != (Promise{1, "s1"}) {
		t.Fatalf("s1 keeps %+v", p)
	}
	// s2 won epoch 1, so s1 lost it: s1 takes s2's Appends of epoch 1
	// (it used to refuse them for the whole epoch, and s2 sent them again
	// at once, forever: the simulator's seed 25).
	c.write("s2", "a")
	c.run()
	c.requireRole("s1", Follower)
	c.requireRole("s2", Leader)
	if c.nodes["s2"].Commit() != 2 || c.nodes["s1"].Leader() != "s2" {
		t.Fatalf("s2's commit %d, s1 follows %q", c.nodes["s2"].Commit(), c.nodes["s1"].Leader())
	}
	c.requireSameLogs("s2")
	c.requireLog("s1", "1:noop", "1:a")
}

// figure8 builds the state of figure 8 of the Raft paper with three
// servers, up to (c): x, written by s1 in epoch 1, is held by s1 and s2
// (a majority), s1 leads epoch 3 and its noop of epoch 3 is on s1 only;
// s3 led epoch 2 and holds its own noop at LSN 2.
func figure8(t *testing.T, resetOnly bool) *cluster {
	t.Helper()
	c := newClusterOf(t, 3, func(cfg *Config) { cfg.MaxBatch = 1 }, resetOnly)
	c.lead("s1")
	c.run() // everyone holds 1:noop, committed
	// (a) s1 writes x in epoch 1; nobody gets it.
	c.write("s1", "x")
	c.drop(to("s1", "", Append{}))
	// (b) s3 leads epoch 2 with s2's promise; its noop reaches nobody.
	// s1 promises epoch 2 too, late (so it has heard of epoch 2).
	c.nodes["s3"].Campaign(c.now)
	c.deliver(to("s3", "s2", Prepare{}))
	c.requireRole("s3", Leader)
	c.drop(to("s3", "", Append{}))
	c.deliver(to("s3", "s1", Prepare{}))
	c.requireRole("s1", Follower)
	c.requireLog("s3", "1:noop", "2:noop")
	c.nodes["s3"].Follow() // s3 crashes, in effect
	// (c) s1 leads epoch 3 with s2's promise (s1's log ends (2,1), s2's
	// (1,1): s1 is the most up to date) and copies x to s2, only x.
	c.nodes["s1"].Campaign(c.now)
	c.drop(to("s1", "s3", Prepare{}))
	c.deliver(to("s1", "s2", Prepare{}))
	c.requireRole("s1", Leader)
	c.requireLog("s1", "1:noop", "1:x", "3:noop")
	r := c.deliver(to("s1", "s2", Append{})).(AppendReply) // after LSN 2: s2 is behind
	if r.OK {
		t.Fatalf("s2 took an Append after LSN 2: %+v", r)
	}
	c.deliver(to("s1", "s2", Append{})) // x alone (MaxBatch 1)
	c.requireLog("s2", "1:noop", "1:x")
	return c
}

// TestFigure8 checks that an entry of an old epoch that a later leader
// copies to a majority is not committed until an entry of the leader's
// own epoch is, because a server whose log ends with a newer epoch may
// still win and erase it; and that once it is, it is never lost.
func TestFigure8(t *testing.T) { bothModes(t, testFigure8) }

func testFigure8(t *testing.T, resetOnly bool) {
	c := figure8(t, resetOnly)
	// x is on s1 and s2, but s1 must not count it as committed.
	if got := c.nodes["s1"].Commit(); got != 1 {
		t.Fatalf("s1 counted x as committed (commit %d) while no entry of epoch 3 is on a majority", got)
	}
	// (d1) s1 crashes now: s3 leads with s2 (its log ends with epoch 2,
	// newer than s2's epoch 1) and x is erased, which is correct: nobody
	// was told x was committed.
	c.queue = nil
	c.nodes["s3"].Campaign(c.now)
	c.settle(3*time.Second, "s1")
	c.requireRole("s3", Leader)
	if got := c.logs["s2"].data(); slices.Contains(got, "1:x") || !slices.Equal(got, c.logs["s3"].data()) {
		t.Fatalf("s2 holds %q, s3 %q", got, c.logs["s3"].data())
	}
	if c.nodes["s3"].Commit() != c.logs["s3"].Last().LSN {
		t.Fatalf("s3's commit is %d, its log ends at %d", c.nodes["s3"].Commit(), c.logs["s3"].Last().LSN)
	}

	// (d2) Same start, but s1's noop of epoch 3 reaches s2: x is committed
	// with it, and s3 can no longer win without copying it.
	c = figure8(t, resetOnly)
	c.deliver(to("s1", "s2", Append{}))
	if got := c.nodes["s1"].Commit(); got != 3 {
		t.Fatalf("s1's commit is %d once s2 holds its noop, want 3", got)
	}
	committed := slices.Clone(c.logs["s1"].entries)
	// s1 dies; s3 campaigns: s2 is more up to date, so s3 drops its noop
	// of epoch 2 (or empties its log), copies s2's, and x survives.
	c.queue = nil
	c.nodes["s3"].Campaign(c.now)
	c.settle(3*time.Second, "s1")
	c.requireRole("s3", Leader)
	for _, name := range []string{"s2", "s3"} {
		if got := c.logs[name].entries; len(got) < 3 || !equalEntries(got[:3], committed) {
			t.Fatalf("%s lost a committed entry: %q", name, c.logs[name].data())
		}
	}
	c.requireRepairs("s3")
}

func equalEntries(a, b []Entry) bool { return slices.EqualFunc(a, b, Entry.Equal) }

// TestOneFetchInFlightAcrossCampaigns is the simulator's seed 1: a
// candidate's campaign started over while its Fetch was in flight; the
// new campaign sent a second Fetch after the same end, both replies were
// applied, and the second did not follow the log (the store refuses
// that: ErrGap, and Err stays set). A stale failure of an older Fetch
// did the same. Now at most one Fetch is in flight, and only its reply,
// answering the log's current end, is applied.
func TestOneFetchInFlightAcrossCampaigns(t *testing.T) {
	c := newCluster(t, 3, func(cfg *Config) { cfg.MaxBatch = 1 })
	c.history([]string{"s1", "s3"}, Promise{1, "s2"}, 1, "noop")
	c.history([]string{"s2"}, Promise{1, "s2"}, 1, "noop", 1, "a", 1, "b", 1, "c")
	s1 := c.nodes["s1"]
	s1.Campaign(c.now)
	c.drop(to("s1", "s3", Prepare{}))
	c.deliver(to("s1", "s2", Prepare{}))
	f1, ok := c.take(to("s1", "s2", Fetch{})) // in flight for long
	if !ok {
		t.Fatalf("s1 sent no Fetch")
	}
	c.tick(time.Second) // the campaign starts over, epoch 3
	c.drop(to("s1", "s3", Prepare{}))
	c.deliver(to("s1", "s2", Prepare{}))
	if _, ok := c.take(to("s1", "s2", Fetch{})); ok {
		t.Fatalf("s1 sent a second Fetch while one was in flight")
	}
	s1.Step(c.handle("s2", f1.Msg), c.now)
	c.run()
	if s1.Err() != nil {
		t.Fatalf("s1's log failed: %v", s1.Err())
	}
	c.requireRole("s1", Leader)
	c.requireLog("s1", "1:noop", "1:a", "1:b", "1:c", "3:noop")

	// A reply to a Fetch that does not answer the log's end is dropped,
	// and the Fetch is sent again.
	c = newCluster(t, 3, func(cfg *Config) { cfg.MaxBatch = 1 })
	c.history([]string{"s1", "s3"}, Promise{1, "s2"}, 1, "noop")
	c.history([]string{"s2"}, Promise{1, "s2"}, 1, "noop", 1, "a", 1, "b")
	s1 = c.nodes["s1"]
	s1.Campaign(c.now)
	c.drop(to("s1", "s3", Prepare{}))
	c.deliver(to("s1", "s2", Prepare{}))
	f1, _ = c.take(to("s1", "s2", Fetch{}))
	reply := c.handle("s2", f1.Msg)
	s1.Step(reply, c.now)
	s1.Step(reply, c.now) // duplicated: entry 2 again
	if s1.Err() != nil {
		t.Fatalf("s1's log failed: %v", s1.Err())
	}
	c.settle(100 * time.Millisecond) // a Tick sends the Fetch again if need be
	c.requireRole("s1", Leader)
	c.requireLog("s1", "1:noop", "1:a", "1:b", "2:noop")
}

// TestStaleAppendReplyOfAnOlderEpochIsIgnored: a reply to an Append that
// a node sent while it led an older epoch says what the follower held of
// that epoch's log, which may differ from the node's log now; counting it
// as a match committed an entry held by 2 servers of 5.
func TestStaleAppendReplyOfAnOlderEpochIsIgnored(t *testing.T) {
	c := newCluster(t, 5, nil)
	c.lead("s1")
	c.run() // everyone holds 1:noop
	// s1 writes a..d in epoch 1; only s2 takes them, and its answer is
	// delayed.
	for _, d := range []string{"a", "b", "c", "d"} {
		c.logs["s1"].write(d)
	}
	c.nodes["s1"].LogGrew(c.now)
	m, _ := c.take(to("s1", "s2", Append{}))
	stale := c.handle("s2", m.Msg).(AppendReply)
	c.drop(to("s1", "", Append{}))
	// s3 leads epoch 2 with s4 and s5, writes x and y, and repairs s1.
	c.nodes["s3"].Campaign(c.now)
	c.drop(to("s3", "s1", Prepare{}))
	c.drop(to("s3", "s2", Prepare{}))
	c.run("s1", "s2")
	c.requireRole("s3", Leader)
	c.write("s3", "x")
	c.write("s3", "y")
	c.settle(500*time.Millisecond, "s2")
	c.requireLog("s1", "1:noop", "2:noop", "2:x", "2:y")
	// s1 leads epoch 3: its noop is at LSN 5, where s2 holds d of epoch 1.
	c.nodes["s1"].Campaign(c.now)
	c.deliver(to("s1", "s3", Prepare{}))
	c.deliver(to("s1", "s4", Prepare{}))
	c.requireRole("s1", Leader)
	c.requireLog("s1", "1:noop", "2:noop", "2:x", "2:y", "3:noop")
	c.nodes["s1"].Step(stale, c.now)    // s2's answer of epoch 1 arrives now
	c.deliver(to("s1", "s4", Append{})) // s4 takes the noop: 2 servers of 5
	if got := c.nodes["s1"].Commit(); got >= 5 {
		t.Fatalf("s1 committed %d with its noop at 5 on s1 and s4 only", got)
	}
}

// TestRepairKeepsCommittedEntries is the simulator's seed 287 (and 15,
// 39, 47, ...): w is committed on s2 and s3; s3 also holds u, never
// committed; s2 leads epoch 2 and repairs s3. Emptying s3's log (Reset)
// left w on s2 alone, and when s2 died, s3 led with s1, which never had
// w: a committed write lost. A Truncater drops u only.
func TestRepairKeepsCommittedEntries(t *testing.T) {
	c := newCluster(t, 3, nil)
	c.history([]string{"s1"}, Promise{1, "s3"}, 1, "noop")
	c.history([]string{"s2"}, Promise{1, "s3"}, 1, "noop", 1, "w")
	c.history([]string{"s3"}, Promise{1, "s3"}, 1, "noop", 1, "w", 1, "u")
	c.nodes["s2"].Campaign(c.now)
	c.drop(to("s2", "s3", Prepare{}))
	c.deliver(to("s2", "s1", Prepare{}))
	c.requireRole("s2", Leader)
	c.drop(to("s2", "s1", Append{}))
	r := c.deliver(to("s2", "s3", Append{})).(AppendReply)
	if !r.OK || c.logs["s3"].resets != 0 {
		t.Fatalf("s3 answered %+v after %d resets", r, c.logs["s3"].resets)
	}
	c.requireLog("s3", "1:noop", "1:w", "2:noop")
	// s2 dies; s3 leads with s1's promise, and w is still there.
	c.queue = nil
	c.nodes["s3"].Campaign(c.now)
	c.settle(2*time.Second, "s2")
	c.requireRole("s3", Leader)
	c.requireLog("s1", "1:noop", "1:w", "2:noop", "3:noop")
}

// TestAppendOKCountsOnlyWhatItChecked: a follower whose log goes on past
// an Append's entries (older entries, unchecked) answers that it holds
// the coordinator's log up to the Append's end only, and commits no
// further. It used to answer its own end, which the coordinator counted
// as held.
func TestAppendOKCountsOnlyWhatItChecked(t *testing.T) {
	c := newCluster(t, 3, nil)
	c.history([]string{"s2"}, Promise{1, "s1"}, 1, "noop", 1, "a", 1, "b", 1, "c")
	n := c.nodes["s2"]
	r := n.HandleAppend(Append{Epoch: 2, Leader: "s3", Prev: Pos{1, 1},
		Entries: []Entry{{LSN: 2, Epoch: 1, Data: []byte("a")}}, Commit: 4})
	if !r.OK || r.Last != (Pos{2, 1}) {
		t.Fatalf("s2 answered %+v, want OK up to (2, 1)", r)
	}
	if n.Commit() != 2 {
		t.Fatalf("s2 commits %d: past what it checked", n.Commit())
	}
	r = n.HandleAppend(Append{Epoch: 2, Leader: "s3", Prev: Pos{4, 1}, Commit: 4}) // a heartbeat
	if !r.OK || r.Last != (Pos{4, 1}) || n.Commit() != 4 {
		t.Fatalf("s2 answered %+v to a heartbeat after (4, 1), commit %d", r, n.Commit())
	}
}

// TestLongCopyKeepsTheCampaign is the simulator's seed 107: a candidate
// comparing its log with a more up-to-date one, one entry per round trip,
// took longer than CampaignTimeout; the campaign started over from the
// log's end, and again, for ever. The timeout now counts from the last
// Fetch that made progress.
func TestLongCopyKeepsTheCampaign(t *testing.T) {
	c := newCluster(t, 3, func(cfg *Config) { cfg.MaxBatch = 1 })
	var entries []any
	for i := range 10 {
		entries = append(entries, 1, fmt.Sprint(i))
	}
	c.history([]string{"s1"}, Promise{1, "s1"}, append(entries, 1, "x")...)
	c.history([]string{"s2", "s3"}, Promise{2, "s2"}, append(entries, 2, "noop")...)
	s1 := c.nodes["s1"]
	s1.Campaign(c.now) // refused: epoch 2 exists
	c.run()
	c.tick(time.Second) // epoch 3
	c.drop(to("s1", "s3", Prepare{}))
	c.deliver(to("s1", "s2", Prepare{}))
	epoch := s1.Epoch()
	for i := 0; s1.Role() == Candidate; i++ {
		if i > 20 {
			t.Fatalf("s1 still copies after %d fetches", i)
		}
		c.tick(300*time.Millisecond, "s2", "s3")
		c.deliver(to("s1", "s2", Fetch{}))
		if s1.Epoch() != epoch {
			t.Fatalf("the campaign started over (epoch %d, then %d) while the copy progressed", epoch, s1.Epoch())
		}
	}
	c.requireRole("s1", Leader)
	c.requireLog("s1", append(c.logs["s2"].data(), "3:noop")...)
}

// TestFetchOfANewerEpochEndsTheCampaign is the simulator's seed 5742: the
// peer a candidate copied from took entries of a newer epoch after its
// promise; the candidate copied them and wrote its own, older, epoch
// after them.
func TestFetchOfANewerEpochEndsTheCampaign(t *testing.T) {
	c := newCluster(t, 3, nil)
	c.history([]string{"s1"}, Promise{1, "s3"}, 1, "noop")
	c.history([]string{"s2"}, Promise{1, "s3"}, 1, "noop", 1, "a")
	c.history([]string{"s3"}, Promise{2, "s3"}, 1, "noop", 1, "a") // it will campaign with epoch 3
	c.nodes["s1"].Campaign(c.now)                                  // epoch 2
	c.drop(to("s1", "s3", Prepare{}))
	c.deliver(to("s1", "s2", Prepare{}))
	fetch, _ := c.take(to("s1", "s2", Fetch{}))
	// s3 leads epoch 3 with s2, before s1's Fetch reaches s2.
	c.nodes["s3"].Campaign(c.now)
	c.drop(to("s3", "s1", Prepare{}))
	c.deliver(to("s3", "s2", Prepare{}))
	c.deliver(to("s3", "s2", Append{}))
	c.requireLog("s2", "1:noop", "1:a", "3:noop")
	c.nodes["s1"].Step(c.handle("s2", fetch.Msg), c.now)
	c.requireRole("s1", Follower)
	c.requireLog("s1", "1:noop")
}
