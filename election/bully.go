// Package election implements the Bully election algorithm
// (Garcia-Molina, 1982) as a deterministic state machine.
//
// Every server has a rank; the live server with the highest rank must end
// up as the coordinator, and every server must learn its name. A server
// that notices the coordinator is gone starts an election: it sends
// Election to every server of higher rank. Any of them that is alive
// answers OK and "bullies" the sender out of the race by starting its own
// election. A server that gets no OK wins and announces itself with a
// Coordinator message.
//
// The Machine follows the design of etcd-io/raft: it is fed messages
// (Step), signs of life (Heard, Unreachable), the list of peers (SetPeers)
// and the passing of time (Tick), and it answers with messages to send
// (Outbox) and with who the coordinator is (Coordinator). It never sleeps,
// reads a clock, starts goroutines or touches sockets: the caller passes
// the current time in as now and sends the messages itself. The same code
// therefore runs under the real network and under a test's fake one.
//
// A machine is in one of four states:
//
//	Follower  knows a coordinator (or nothing yet) and watches it
//	Electing  sent Election to every higher rank, waits for an OK
//	Waiting   got an OK, waits for the winner's announcement
//	Leading   is the coordinator and re-announces itself periodically
//
// and moves between them like this:
//
//	Follower --coordinator silent or unreachable---> Electing
//	Follower --Election, or a lower rank's claim---> Electing
//	Electing --OK from a higher rank---------------> Waiting
//	Electing --no OK within AnswerTimeout----------> Leading
//	Waiting  --no announcement in AnnounceTimeout--> Electing
//	any      --announcement from a higher rank-----> Follower
//
// The transport answers an Election request with OK by itself (the wire
// standard's reply {"election":"OK"}) and feeds that reply back to the
// sender's machine as an Answer message. A Machine therefore never sends
// Answer; it only receives it.
//
// Bully gives no safety under a network partition: each side elects its
// own coordinator. When the partition heals, the periodic announcements
// make every server follow the highest rank again.
//
// A Machine is not safe for concurrent use: one goroutine of the caller
// owns it.
package election

import (
	"fmt"
	"maps"
	"slices"
	"time"
)

// Peer is another server of the cluster, as the registry lists it.
type Peer struct {
	Name string
	Rank int
}

// Kind is the kind of a Bully message.
type Kind int

// The three messages of the Bully algorithm.
const (
	Election    Kind = iota + 1 // "I am electing": sent to every higher rank
	Answer                      // "OK, I am alive and will take over": the reply to Election
	Coordinator                 // "I am the coordinator": sent to everyone
)

// String returns the kind's name, such as "Election".
func (k Kind) String() string {
	switch k {
	case Election:
		return "Election"
	case Answer:
		return "Answer"
	case Coordinator:
		return "Coordinator"
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// Message is one Bully message. To is the recipient; for Coordinator
// announcements To is "" (everyone).
type Message struct {
	Kind Kind
	From string
	Rank int // the sender's rank
	To   string
}

// State is where a Machine stands in the algorithm.
type State int

// The four states of a Machine.
const (
	Follower State = iota // knows a coordinator, or nothing yet
	Electing              // sent Election to higher ranks, waiting for an OK
	Waiting               // got an OK, waiting for the announcement
	Leading               // this server is the coordinator
)

// String returns the state's name, such as "Follower".
func (s State) String() string {
	switch s {
	case Follower:
		return "Follower"
	case Electing:
		return "Electing"
	case Waiting:
		return "Waiting"
	case Leading:
		return "Leading"
	}
	return fmt.Sprintf("State(%d)", int(s))
}

// Machine is one server's side of the Bully algorithm.
type Machine struct {
	cfg   Config
	peers map[string]int // rank of every other server, by name (from SetPeers)

	state       State
	coordinator string // "" when unknown; cfg.Self when Leading
	term        uint64
	outbox      []Message

	// Each state has one timer; Tick compares it with now.
	heard     time.Time // Follower: when the coordinator last showed signs of life
	electing  time.Time // Electing: when the election began
	answered  time.Time // Waiting: when the OK arrived
	announced time.Time // Leading: when the last announcement was queued
}

// New returns a machine for the server cfg describes. It starts as a
// Follower with no coordinator known and no peers: call SetPeers, then
// Start (or let the next Tick start the election).
// New panics if cfg.Validate fails, since that is a programming error.
func New(cfg Config, now time.Time) *Machine {
	if err := cfg.Validate(); err != nil {
		panic(err)
	}
	return &Machine{
		cfg:   cfg,
		peers: map[string]int{},
		state: Follower,
		heard: now,
	}
}

// SetPeers replaces the list of the other servers; the list may include
// this server, which is ignored. Call it whenever the registry's list
// changes. If the coordinator this machine follows is no longer listed,
// an election starts.
func (m *Machine) SetPeers(peers []Peer, now time.Time) {
	m.peers = make(map[string]int, len(peers))
	for _, p := range peers {
		if p.Name != m.cfg.Self {
			m.peers[p.Name] = p.Rank
		}
	}
	if m.state == Follower && m.coordinator != "" {
		if _, listed := m.peers[m.coordinator]; !listed {
			m.Start(now)
		}
	}
}

// Start begins an election: the coordinator becomes unknown and Election
// goes to every peer of higher rank. With no higher peer, this server wins
// at once.
func (m *Machine) Start(now time.Time) {
	m.setCoordinator("")
	m.state = Electing
	m.electing = now
	higher := m.higherPeers()
	if len(higher) == 0 {
		m.win(now)
		return
	}
	for _, name := range higher {
		m.send(Election, name)
	}
}

// Step feeds the machine one message that arrived for this server.
// Messages from this server itself (an announcement echoed back) and
// messages addressed to another server are ignored.
func (m *Machine) Step(msg Message, now time.Time) {
	if msg.From == m.cfg.Self || (msg.To != "" && msg.To != m.cfg.Self) {
		return
	}
	m.Heard(msg.From, now)
	switch msg.Kind {
	case Election:
		// Someone is electing. The transport has already answered OK
		// for us; now we must take over.
		m.bully(now)
	case Answer:
		// A higher rank is alive and will take over: wait for it.
		if m.state == Electing {
			m.state = Waiting
			m.answered = now
		}
	case Coordinator:
		if m.outranks(msg.From, m.rankOf(msg)) {
			m.setCoordinator(msg.From)
			m.state = Follower
			m.heard = now
		} else {
			// A lower rank claims to be the coordinator: we are
			// alive and rank higher, so we take over.
			m.bully(now)
		}
	}
}

// Heard records a sign of life from peer: a reply to a liveness check or
// any message. Only signs of life from the coordinator matter.
func (m *Machine) Heard(peer string, now time.Time) {
	if m.state == Follower && peer != "" && peer == m.coordinator {
		m.heard = now
	}
}

// Unreachable records that a request to peer got no reply. If peer is the
// coordinator, it is taken for dead and an election starts.
func (m *Machine) Unreachable(peer string, now time.Time) {
	if m.state == Follower && peer != "" && peer == m.coordinator {
		m.Start(now)
	}
}

// Tick lets time pass: it acts on whichever timeout of the current state
// has expired.
//
// A timeout expires once strictly more than its duration has passed, while
// a coordinator announces as soon as AnnounceInterval has passed. So when
// CoordinatorTimeout equals AnnounceInterval, an announcement that leaves
// on time arrives before its followers give up on it.
func (m *Machine) Tick(now time.Time) {
	switch m.state {
	case Follower:
		if m.coordinator == "" || now.Sub(m.heard) > m.cfg.CoordinatorTimeout {
			m.Start(now)
		}
	case Electing:
		if now.Sub(m.electing) > m.cfg.AnswerTimeout {
			m.win(now) // no higher rank answered: they are all down
		}
	case Waiting:
		if now.Sub(m.answered) > m.cfg.AnnounceTimeout {
			m.Start(now) // the one who answered OK died before announcing
		}
	case Leading:
		if now.Sub(m.announced) >= m.cfg.AnnounceInterval {
			m.announce(now)
		}
	}
}

// Outbox returns the messages to send since the last call, and forgets them.
func (m *Machine) Outbox() []Message {
	out := m.outbox
	m.outbox = nil
	return out
}

// Coordinator returns the coordinator's name, or "" when it is unknown.
func (m *Machine) Coordinator() string { return m.coordinator }

// State returns the machine's state.
func (m *Machine) State() State { return m.state }

// Term counts the changes of Coordinator() this machine has seen: it
// increases by 1 on every change, including to and from "" (unknown).
// It is meant for logs and tests.
func (m *Machine) Term() uint64 { return m.term }

// bully reacts to a server that is electing or that claims to be the
// coordinator although this server ranks higher (or is the coordinator).
// The coordinator reminds everyone who it is; a follower starts its own
// election; a server already in an election carries on with it.
func (m *Machine) bully(now time.Time) {
	switch m.state {
	case Leading:
		m.announce(now)
	case Follower:
		m.Start(now)
	}
}

// win makes this server the coordinator and announces it.
func (m *Machine) win(now time.Time) {
	m.state = Leading
	m.setCoordinator(m.cfg.Self)
	m.announce(now)
}

// announce queues a Coordinator message for everyone.
func (m *Machine) announce(now time.Time) {
	m.send(Coordinator, "")
	m.announced = now
}

// send queues a message from this server.
func (m *Machine) send(kind Kind, to string) {
	m.outbox = append(m.outbox, Message{Kind: kind, From: m.cfg.Self, Rank: m.cfg.Rank, To: to})
}

// setCoordinator changes the coordinator, counting the change in the term.
func (m *Machine) setCoordinator(name string) {
	if name != m.coordinator {
		m.coordinator = name
		m.term++
	}
}

// higherPeers returns the peers that outrank this server, sorted by name.
func (m *Machine) higherPeers() []string {
	var higher []string
	for _, name := range slices.Sorted(maps.Keys(m.peers)) {
		if m.outranks(name, m.peers[name]) {
			higher = append(higher, name)
		}
	}
	return higher
}

// outranks reports whether the server name of the given rank ranks above
// this one. Equal ranks are broken by name: the greater name wins.
func (m *Machine) outranks(name string, rank int) bool {
	if rank != m.cfg.Rank {
		return rank > m.cfg.Rank
	}
	return name > m.cfg.Self
}

// rankOf returns the rank of msg's sender: the one SetPeers gave, or,
// for a sender not listed yet, the rank the message carries.
func (m *Machine) rankOf(msg Message) int {
	if rank, listed := m.peers[msg.From]; listed {
		return rank
	}
	return msg.Rank
}
