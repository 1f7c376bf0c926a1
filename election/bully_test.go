package election

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

// t0 is the start of every test's fake time.
var t0 = time.Date(2024, 1, 1, 12, 0, 0, 0, time.UTC)

// step is how far the test network's clock moves per tick. It divides
// every default timeout, so that timeouts fall exactly on ticks.
const step = 50 * time.Millisecond

// defaults holds the default timeouts, which the tests use to know how long
// to let time pass.
var defaults = DefaultConfig("any", 0)

// network is a tiny fake network for several Machines. Messages wait in
// one queue and are delivered in order. Delivering an Election makes the
// receiver's "transport" queue an Answer back to the sender, as the real
// transport replies {"election":"OK"} by itself. A crashed machine
// receives nothing and sends nothing; machines on different sides of a
// partition cannot reach each other.
type network struct {
	t        *testing.T
	now      time.Time
	names    []string // sorted, so that every loop is deterministic
	ranks    map[string]int
	machines map[string]*Machine
	crashed  map[string]bool
	side     map[string]int                    // partition side of each machine; nil: no partition
	drop     func(msg Message, to string) bool // if set, may lose a message on its way to to
	queue    []Message
}

// newNetwork starts one Machine per name, with the given ranks, each
// knowing all the others. None has started an election yet.
func newNetwork(t *testing.T, ranks map[string]int) *network {
	n := &network{
		t:        t,
		now:      t0,
		ranks:    ranks,
		machines: map[string]*Machine{},
		crashed:  map[string]bool{},
	}
	for name := range ranks {
		n.names = append(n.names, name)
	}
	slices.Sort(n.names)
	for _, name := range n.names {
		n.boot(name)
	}
	return n
}

// threeServers is the usual cluster: s1 < s2 < s3.
func threeServers(t *testing.T) *network {
	return newNetwork(t, map[string]int{"s1": 1, "s2": 2, "s3": 3})
}

// boot creates a fresh machine for name, as a process (re)start does.
func (n *network) boot(name string) {
	var peers []Peer
	for _, other := range n.names {
		peers = append(peers, Peer{Name: other, Rank: n.ranks[other]})
	}
	m := New(DefaultConfig(name, n.ranks[name]), n.now)
	m.SetPeers(peers, n.now)
	n.machines[name] = m
}

// crash stops name: what it had not sent yet is lost.
func (n *network) crash(name string) {
	n.crashed[name] = true
	n.machines[name].Outbox()
}

// restart brings name back with a fresh machine (a new process).
func (n *network) restart(name string) {
	n.crashed[name] = false
	n.boot(name)
}

// partition splits the machines into sides that cannot reach each other.
func (n *network) partition(sides ...[]string) {
	n.side = map[string]int{}
	for i, names := range sides {
		for _, name := range names {
			n.side[name] = i
		}
	}
}

// heal ends the partition.
func (n *network) heal() { n.side = nil }

// up returns the names of the machines that are not crashed.
func (n *network) up() []string {
	var names []string
	for _, name := range n.names {
		if !n.crashed[name] {
			names = append(names, name)
		}
	}
	return names
}

// flush moves every running machine's outbox into the network's queue.
func (n *network) flush() {
	for _, name := range n.up() {
		for _, msg := range n.machines[name].Outbox() {
			if msg.Kind == Answer {
				n.t.Fatalf("%s queued an Answer; the transport sends those", name)
			}
			n.queue = append(n.queue, msg)
		}
	}
}

// reachable reports whether a message from one machine gets to another.
func (n *network) reachable(msg Message, to string) bool {
	if n.crashed[to] {
		return false
	}
	if n.side != nil && n.side[msg.From] != n.side[to] {
		return false
	}
	return n.drop == nil || !n.drop(msg, to)
}

// deliverNext delivers the first queued message and reports whether there
// was one. A message already queued is delivered even if its sender has
// crashed since: it had left.
func (n *network) deliverNext() (Message, bool) {
	if len(n.queue) == 0 {
		return Message{}, false
	}
	msg := n.queue[0]
	n.queue = n.queue[1:]
	recipients := []string{msg.To}
	if msg.To == "" {
		recipients = nil
		for _, name := range n.names {
			if name != msg.From {
				recipients = append(recipients, name)
			}
		}
	}
	for _, to := range recipients {
		if !n.reachable(msg, to) {
			continue
		}
		n.machines[to].Step(msg, n.now)
		if msg.Kind == Election {
			n.queue = append(n.queue, Message{Kind: Answer, From: to, Rank: n.ranks[to], To: msg.From})
		}
	}
	return msg, true
}

// run delivers messages until none is left, without moving the clock.
func (n *network) run() {
	for delivered := 0; ; delivered++ {
		if delivered > 10_000 {
			n.t.Fatalf("more than 10000 messages without time passing: a message storm")
		}
		n.flush()
		if _, ok := n.deliverNext(); !ok {
			return
		}
	}
}

// deliverUntil delivers messages until one for which match is true has
// been delivered. It does not collect what that delivery made its
// receiver send.
func (n *network) deliverUntil(match func(Message) bool) {
	for {
		n.flush()
		msg, ok := n.deliverNext()
		if !ok {
			n.t.Fatalf("no matching message was queued")
		}
		if match(msg) {
			return
		}
	}
}

// tick moves the clock one step and ticks every running machine.
func (n *network) tick() {
	n.now = n.now.Add(step)
	for _, name := range n.up() {
		n.machines[name].Tick(n.now)
	}
}

// runFor lets d pass, one tick at a time, delivering everything after
// each tick.
func (n *network) runFor(d time.Duration) {
	end := n.now.Add(d)
	for n.now.Before(end) {
		n.tick()
		n.run()
	}
}

// startAll starts an election on the given machines at the same moment.
func (n *network) startAll(names ...string) {
	for _, name := range names {
		n.machines[name].Start(n.now)
	}
}

// requireAgreement fails unless every running machine follows want, want
// is Leading and all the others are Followers.
func (n *network) requireAgreement(want string) {
	n.t.Helper()
	if problem := n.disagreement(want); problem != "" {
		n.t.Fatal(problem)
	}
}

// disagreement describes the first running machine that does not follow
// want in the right state, or returns "" when all of them do.
func (n *network) disagreement(want string) string {
	for _, name := range n.up() {
		m := n.machines[name]
		wantState := Follower
		if name == want {
			wantState = Leading
		}
		if m.Coordinator() != want || m.State() != wantState {
			return fmt.Sprintf("at +%v %s: coordinator %q state %v, want %q %v",
				n.now.Sub(t0), name, m.Coordinator(), m.State(), want, wantState)
		}
	}
	return ""
}

func TestThreeServersStartTogetherAndAgreeOnHighestRank(t *testing.T) {
	n := threeServers(t)
	n.runFor(step) // the first tick starts an election on every machine
	n.requireAgreement("s3")
}

func TestThreeServersStartAtOnceExplicitly(t *testing.T) {
	n := threeServers(t)
	n.startAll("s1", "s2", "s3")
	n.run()
	n.requireAgreement("s3")
}

// In each case s1 starts an election that s3 would win, and s3 crashes at
// a different moment of it. s2, the next highest, must be announced.
func TestCoordinatorCrashDuringElection(t *testing.T) {
	t.Run("before it answers", func(t *testing.T) {
		n := threeServers(t)
		n.startAll("s1")
		n.crash("s3") // s1's Election never reaches s3
		n.run()
		// s2 got s1's Election, started its own and hears nothing from s3.
		n.runFor(defaults.AnswerTimeout + step)
		n.requireAgreement("s2")
	})

	t.Run("after it answered OK, before announcing", func(t *testing.T) {
		n := threeServers(t)
		n.startAll("s1")
		n.deliverUntil(func(msg Message) bool { return msg.Kind == Election && msg.To == "s3" })
		// s3's transport has queued the OK; s3's announcement is still in
		// its outbox and dies with it.
		n.crash("s3")
		n.run()
		if got := n.machines["s1"].State(); got != Waiting {
			t.Fatalf("s1 after the OKs: %v, want Waiting", got)
		}
		n.runFor(defaults.AnswerTimeout + step)
		n.requireAgreement("s2")
	})

	t.Run("right after announcing", func(t *testing.T) {
		n := threeServers(t)
		n.startAll("s1")
		n.run()
		n.requireAgreement("s3")
		n.crash("s3")
		// s1 and s2 notice the silence, then s2 hears no OK from s3.
		n.runFor(defaults.CoordinatorTimeout + step + defaults.AnswerTimeout + step)
		n.requireAgreement("s2")
	})
}

func TestUnreachableCoordinatorStartsElection(t *testing.T) {
	n := threeServers(t)
	n.startAll("s1")
	n.run()
	n.crash("s3")
	n.machines["s1"].Unreachable("s3", n.now) // a request of s1 to s3 timed out
	if got := n.machines["s1"].State(); got != Electing {
		t.Fatalf("s1 after Unreachable(s3): %v, want Electing", got)
	}
	n.run()
	n.runFor(defaults.AnswerTimeout + step) // much sooner than CoordinatorTimeout
	n.requireAgreement("s2")
}

func TestTwoElectionsAtOnceEndWithOneCoordinator(t *testing.T) {
	t.Run("highest rank up", func(t *testing.T) {
		n := threeServers(t)
		n.startAll("s1", "s2")
		n.run()
		n.requireAgreement("s3")
	})

	t.Run("highest rank down", func(t *testing.T) {
		n := newNetwork(t, map[string]int{"s1": 1, "s2": 2, "s3": 3, "s4": 4})
		n.crash("s4")
		n.startAll("s1", "s2")
		n.run()
		n.runFor(defaults.AnswerTimeout + step)
		n.requireAgreement("s3")
	})
}

func TestReturningHigherRankTakesOver(t *testing.T) {
	n := threeServers(t)
	n.crash("s3")
	n.runFor(step + defaults.AnswerTimeout + step)
	n.requireAgreement("s2")
	termBefore := n.machines["s1"].Term()

	n.restart("s3")
	n.runFor(step) // s3's first tick: it starts, outranks everyone, wins
	n.requireAgreement("s3")
	if got := n.machines["s1"].Term(); got != termBefore+1 {
		t.Fatalf("s1's term went from %d to %d, want one change (s2 -> s3)", termBefore, got)
	}
}

func TestPartitionGivesEachSideACoordinatorUntilItHeals(t *testing.T) {
	n := threeServers(t)
	n.runFor(step)
	n.requireAgreement("s3")

	n.partition([]string{"s1", "s2"}, []string{"s3"})
	n.runFor(defaults.CoordinatorTimeout + step + defaults.AnswerTimeout + step)
	// Bully cannot tell a partition from a crash: each side has its own.
	for _, c := range []struct{ name, coordinator string }{{"s1", "s2"}, {"s2", "s2"}, {"s3", "s3"}} {
		if got := n.machines[c.name].Coordinator(); got != c.coordinator {
			t.Fatalf("during the partition %s follows %q, want %q", c.name, got, c.coordinator)
		}
	}
	if n.machines["s2"].State() != Leading || n.machines["s3"].State() != Leading {
		t.Fatalf("during the partition: s2 %v, s3 %v; want both Leading",
			n.machines["s2"].State(), n.machines["s3"].State())
	}

	n.heal()
	n.runFor(defaults.AnnounceInterval + defaults.CoordinatorTimeout)
	n.requireAgreement("s3")
}

func TestLoneServerElectsItself(t *testing.T) {
	m := New(DefaultConfig("solo", 1), t0)
	m.SetPeers([]Peer{{Name: "solo", Rank: 1}}, t0) // only itself: ignored
	m.Tick(t0)
	if m.State() != Leading || m.Coordinator() != "solo" {
		t.Fatalf("lone server: %v, coordinator %q; want Leading, solo", m.State(), m.Coordinator())
	}
	want := []Message{{Kind: Coordinator, From: "solo", Rank: 1, To: ""}}
	if got := m.Outbox(); !slices.Equal(got, want) {
		t.Fatalf("outbox = %v, want %v", got, want)
	}
}

func TestLeaderReannouncesEveryInterval(t *testing.T) {
	cfg := DefaultConfig("solo", 1)
	m := New(cfg, t0)
	m.Start(t0)
	m.Outbox()
	m.Tick(t0.Add(cfg.AnnounceInterval - time.Nanosecond))
	if got := m.Outbox(); len(got) != 0 {
		t.Fatalf("announced too early: %v", got)
	}
	m.Tick(t0.Add(cfg.AnnounceInterval))
	if got := m.Outbox(); len(got) != 1 || got[0].Kind != Coordinator {
		t.Fatalf("after one interval: %v, want one announcement", got)
	}
}

// middle returns s2 of s1 < s2 < s3, knowing its peers.
func middle(t *testing.T) (*Machine, Config) {
	t.Helper()
	cfg := DefaultConfig("s2", 2)
	m := New(cfg, t0)
	m.SetPeers([]Peer{{"s1", 1}, {"s2", 2}, {"s3", 3}}, t0)
	return m, cfg
}

func TestTermIncreasesOnEveryCoordinatorChange(t *testing.T) {
	m, cfg := middle(t)
	now := t0
	check := func(wantCoordinator string, wantTerm uint64) {
		t.Helper()
		if m.Coordinator() != wantCoordinator || m.Term() != wantTerm {
			t.Fatalf("coordinator %q term %d, want %q %d", m.Coordinator(), m.Term(), wantCoordinator, wantTerm)
		}
	}
	check("", 0)
	m.Step(Message{Kind: Coordinator, From: "s3", Rank: 3}, now)
	check("s3", 1)
	m.Step(Message{Kind: Coordinator, From: "s3", Rank: 3}, now)
	check("s3", 1) // the same coordinator again is no change
	m.Unreachable("s3", now)
	check("", 2)
	now = now.Add(cfg.AnswerTimeout + time.Nanosecond)
	m.Tick(now)
	check("s2", 3)
	m.Step(Message{Kind: Coordinator, From: "s3", Rank: 3}, now)
	check("s3", 4)
}

func TestElectionIsNeverAnsweredByTheMachine(t *testing.T) {
	m, _ := middle(t)
	m.Step(Message{Kind: Election, From: "s1", Rank: 1, To: "s2"}, t0)
	want := []Message{{Kind: Election, From: "s2", Rank: 2, To: "s3"}}
	if got := m.Outbox(); !slices.Equal(got, want) {
		t.Fatalf("follower's reaction to an Election: %v, want only its own %v", got, want)
	}

	leader := New(DefaultConfig("s3", 3), t0)
	leader.Start(t0)
	leader.Outbox()
	leader.Step(Message{Kind: Election, From: "s1", Rank: 1, To: "s3"}, t0)
	want = []Message{{Kind: Coordinator, From: "s3", Rank: 3}}
	if got := leader.Outbox(); !slices.Equal(got, want) {
		t.Fatalf("leader's reaction to an Election: %v, want a re-announcement %v", got, want)
	}
}

func TestAnswerThenNoAnnouncementStartsOver(t *testing.T) {
	m, cfg := middle(t)
	m.Start(t0)
	m.Outbox()
	answeredAt := t0.Add(10 * time.Millisecond)
	m.Step(Message{Kind: Answer, From: "s3", Rank: 3, To: "s2"}, answeredAt)
	if m.State() != Waiting {
		t.Fatalf("after an OK: %v, want Waiting", m.State())
	}
	m.Tick(answeredAt.Add(cfg.AnnounceTimeout))
	if m.State() != Waiting {
		t.Fatalf("at exactly AnnounceTimeout: %v, want still Waiting", m.State())
	}
	m.Tick(answeredAt.Add(cfg.AnnounceTimeout + time.Nanosecond))
	want := []Message{{Kind: Election, From: "s2", Rank: 2, To: "s3"}}
	if got := m.Outbox(); m.State() != Electing || !slices.Equal(got, want) {
		t.Fatalf("after AnnounceTimeout: %v, outbox %v; want Electing, %v", m.State(), got, want)
	}
}

func TestCoordinatorFromLowerRankIsBullied(t *testing.T) {
	m, _ := middle(t)
	m.Step(Message{Kind: Coordinator, From: "s1", Rank: 1}, t0)
	if m.State() != Electing || m.Coordinator() != "" {
		t.Fatalf("follower after a lower rank's claim: %v %q, want Electing", m.State(), m.Coordinator())
	}

	leader := New(DefaultConfig("s3", 3), t0)
	leader.Start(t0)
	leader.Outbox()
	leader.Step(Message{Kind: Coordinator, From: "s1", Rank: 1}, t0)
	if leader.State() != Leading || len(leader.Outbox()) != 1 {
		t.Fatalf("leader after a lower rank's claim: %v, want Leading with one re-announcement", leader.State())
	}
}

func TestFollowerWatchesItsCoordinator(t *testing.T) {
	m, cfg := middle(t)
	m.Step(Message{Kind: Coordinator, From: "s3", Rank: 3}, t0)
	heardAt := t0.Add(800 * time.Millisecond)
	m.Heard("s3", heardAt) // e.g. a reply to a liveness check
	m.Tick(heardAt.Add(cfg.CoordinatorTimeout))
	if m.State() != Follower {
		t.Fatalf("at exactly CoordinatorTimeout: %v, want still Follower", m.State())
	}
	m.Tick(heardAt.Add(cfg.CoordinatorTimeout + time.Nanosecond))
	if m.State() != Electing {
		t.Fatalf("after CoordinatorTimeout of silence: %v, want Electing", m.State())
	}
}

func TestSetPeersRemovingCoordinatorStartsElection(t *testing.T) {
	m, _ := middle(t)
	m.Step(Message{Kind: Coordinator, From: "s3", Rank: 3}, t0)
	m.SetPeers([]Peer{{"s1", 1}, {"s3", 3}}, t0) // unchanged: nothing happens
	if m.State() != Follower || m.Coordinator() != "s3" {
		t.Fatalf("after an unchanged list: %v %q", m.State(), m.Coordinator())
	}
	m.SetPeers([]Peer{{"s1", 1}}, t0) // s3 left the registry
	if m.State() != Leading || m.Coordinator() != "s2" {
		t.Fatalf("after s3 left: %v %q, want Leading s2 (no higher rank left)", m.State(), m.Coordinator())
	}
}

func TestRankTieIsBrokenByName(t *testing.T) {
	a := New(DefaultConfig("a", 5), t0)
	a.SetPeers([]Peer{{"b", 5}}, t0)
	a.Start(t0)
	if a.State() != Electing {
		t.Fatalf("a with an equal-rank b: %v, want Electing (b's name sorts higher)", a.State())
	}
	b := New(DefaultConfig("b", 5), t0)
	b.SetPeers([]Peer{{"a", 5}}, t0)
	b.Start(t0)
	if b.State() != Leading {
		t.Fatalf("b with an equal-rank a: %v, want Leading", b.State())
	}
}

func TestUnknownSenderIsRankedByItsMessage(t *testing.T) {
	m := New(DefaultConfig("s2", 2), t0) // no peers known yet
	m.Step(Message{Kind: Coordinator, From: "newcomer", Rank: 9}, t0)
	if m.Coordinator() != "newcomer" {
		t.Fatalf("coordinator %q, want the unlisted higher rank", m.Coordinator())
	}
}

func TestMessagesForOthersAndOwnEchoesAreIgnored(t *testing.T) {
	m, _ := middle(t)
	m.Step(Message{Kind: Election, From: "s1", Rank: 1, To: "s3"}, t0)
	m.Step(Message{Kind: Coordinator, From: "s2", Rank: 2}, t0)
	if m.State() != Follower || len(m.Outbox()) != 0 {
		t.Fatalf("reacted to a message not for it: %v", m.State())
	}
}

func TestConfigValidate(t *testing.T) {
	if err := DefaultConfig("s1", 1).Validate(); err != nil {
		t.Fatalf("default config: %v", err)
	}
	noName := DefaultConfig("", 1)
	if noName.Validate() == nil {
		t.Fatal("empty Self accepted")
	}
	zero := DefaultConfig("s1", 1)
	zero.AnswerTimeout = 0
	if zero.Validate() == nil {
		t.Fatal("zero AnswerTimeout accepted")
	}
	defer func() {
		if recover() == nil {
			t.Fatal("New accepted an invalid config")
		}
	}()
	New(zero, t0)
}

func TestStrings(t *testing.T) {
	for v, want := range map[interface{ String() string }]string{
		Election: "Election", Answer: "Answer", Coordinator: "Coordinator", Kind(9): "Kind(9)",
		Follower: "Follower", Electing: "Electing", Waiting: "Waiting", Leading: "Leading", State(9): "State(9)",
	} {
		if got := v.String(); got != want {
			t.Errorf("String() = %q, want %q", got, want)
		}
	}
}

// TestRandomizedRunsAgreeOnHighestRank runs 200 seeded histories of random
// crashes, restarts, lost and delayed messages, spurious elections and
// false alarms. Then everything comes back up, no message is lost any
// more, and every machine must follow the highest rank.
func TestRandomizedRunsAgreeOnHighestRank(t *testing.T) {
	settle := defaults.AnnounceTimeout + defaults.CoordinatorTimeout + defaults.AnswerTimeout + 2*defaults.AnnounceInterval
	for seed := uint64(1); seed <= 200; seed++ {
		rng := rand.New(rand.NewPCG(seed, 0))

		// 3 to 5 servers whose ranks are shuffled, so that name order
		// and rank order differ.
		count := 3 + rng.IntN(3)
		ranks := map[string]int{}
		names := []string{"a", "b", "c", "d", "e"}[:count]
		for i, rank := range rng.Perm(count) {
			ranks[names[i]] = rank + 1
		}
		n := newNetwork(t, ranks)
		n.drop = func(Message, string) bool { return rng.IntN(5) == 0 }
		pick := func(names []string) string {
			if len(names) == 0 {
				return ""
			}
			return names[rng.IntN(len(names))]
		}

		for range 200 {
			n.tick()
			switch rng.IntN(20) {
			case 0:
				if name := pick(n.up()); name != "" {
					n.crash(name)
				}
			case 1:
				var down []string
				for _, name := range n.names {
					if n.crashed[name] {
						down = append(down, name)
					}
				}
				if name := pick(down); name != "" {
					n.restart(name)
				}
			case 2:
				if name := pick(n.up()); name != "" {
					n.machines[name].Start(n.now)
				}
			case 3:
				if name := pick(n.up()); name != "" {
					m := n.machines[name]
					m.Unreachable(m.Coordinator(), n.now)
				}
			}
			// Deliver only a few messages: the rest wait, as if slow.
			for k := rng.IntN(6); k > 0; k-- {
				n.flush()
				n.deliverNext()
			}
		}

		n.drop = nil
		for _, name := range n.names {
			if n.crashed[name] {
				n.restart(name)
			}
		}
		n.run()
		n.runFor(settle)

		highest := n.names[0]
		for _, name := range n.names {
			if ranks[name] > ranks[highest] {
				highest = name
			}
		}
		if problem := n.disagreement(highest); problem != "" {
			t.Fatalf("seed %d (ranks %v): %s", seed, ranks, problem)
		}

		// Once agreed, it stays agreed: no more coordinator changes.
		terms := map[string]uint64{}
		for _, name := range n.names {
			terms[name] = n.machines[name].Term()
		}
		n.runFor(3 * defaults.AnnounceInterval)
		for _, name := range n.names {
			if got := n.machines[name].Term(); got != terms[name] {
				t.Fatalf("seed %d (ranks %v): %s's term moved from %d to %d after agreement",
					seed, ranks, name, terms[name], got)
			}
		}
	}
}
