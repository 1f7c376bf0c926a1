package replication

// The replication messages. Each is a request one server sends to another
// server's listen socket, inside the standard envelope
// {"service": <name>, "data": <the fields below>}, and each gets one
// reply. docs/PROTOCOL.md describes them for other implementations.

// Services of the replication messages.
const (
	ServicePrepare = "prepare" // a candidate asks for a promise for its epoch
	ServiceAppend  = "append"  // the coordinator sends entries (or none: a heartbeat)
	ServiceFetch   = "fetch"   // a candidate copies entries it lacks from a peer
	ServiceCommit  = "commit"  // a server asks the coordinator how far it has committed (reads)
)

// Pos is a position in the log: an entry's LSN and the epoch that ordered
// it. The zero Pos is the empty log.
type Pos struct {
	LSN   uint64 `msgpack:"lsn"`
	Epoch uint64 `msgpack:"epoch"`
}

// Before reports whether a log ending at p is less up to date than one
// ending at q: an older last epoch, or the same epoch and fewer entries
// (Raft's rule).
func (p Pos) Before(q Pos) bool {
	if p.Epoch != q.Epoch {
		return p.Epoch < q.Epoch
	}
	return p.LSN < q.LSN
}

// Entry is one log entry: its position and its encoding, which only the
// store reads.
type Entry struct {
	LSN   uint64 `msgpack:"lsn"`
	Epoch uint64 `msgpack:"epoch"`
	Data  []byte `msgpack:"data"`
}

// Pos returns the entry's position.
func (e Entry) Pos() Pos { return Pos{LSN: e.LSN, Epoch: e.Epoch} }

// Equal reports whether two entries are the same: position and data.
func (e Entry) Equal(o Entry) bool {
	return e.LSN == o.LSN && e.Epoch == o.Epoch && string(e.Data) == string(o.Data)
}

// Promise is what a server has promised: to take entries only from Leader
// in Epoch, and to refuse every older epoch. It is kept on disk.
type Promise struct {
	Epoch  uint64 `msgpack:"epoch"`
	Leader string `msgpack:"leader"`
}

// Allows reports whether a server that made promise p may follow leader
// in epoch: a newer epoch, or the same epoch and the same leader. Two
// candidates that chose the same epoch cannot both collect a majority.
func (p Promise) Allows(epoch uint64, leader string) bool {
	return epoch > p.Epoch || (epoch == p.Epoch && leader == p.Leader)
}

// Prepare asks the receiver to promise Epoch to Leader.
type Prepare struct {
	Epoch  uint64 `msgpack:"epoch"`
	Leader string `msgpack:"leader"`
}

// PrepareReply is the answer to Prepare: OK with the end of the
// receiver's log, or refused with the promise it holds.
type PrepareReply struct {
	From     string  `msgpack:"from"`
	OK       bool    `msgpack:"ok"`
	Promised Promise `msgpack:"promised"`
	Last     Pos     `msgpack:"last"`
}

// Append carries entries from the coordinator: they follow the entry at
// Prev. No entries make it a heartbeat. Commit is how far the coordinator
// has committed.
type Append struct {
	Epoch   uint64  `msgpack:"epoch"`
	Leader  string  `msgpack:"leader"`
	Prev    Pos     `msgpack:"prev"`
	Entries []Entry `msgpack:"entries"`
	Commit  uint64  `msgpack:"commit"`
	Seq     uint64  `msgpack:"seq,omitempty"` // echoed in the reply, to tell which Append it answers
}

// AppendReply is the answer to Append. OK: the receiver holds the
// coordinator's log up to Last, durably (an older, unchecked tail after it
// does not count). Not OK: refused because the receiver promised a newer
// Epoch, or the coordinator must send from after Last.
type AppendReply struct {
	From  string `msgpack:"from"`
	OK    bool   `msgpack:"ok"`
	Epoch uint64 `msgpack:"epoch"`
	Last  Pos    `msgpack:"last"`
	Seq   uint64 `msgpack:"seq,omitempty"` // the Append's Seq
}

// Fetch asks for the entries after After, at most Max of them.
type Fetch struct {
	After Pos `msgpack:"after"`
	Max   int `msgpack:"max"`
}

// FetchReply answers Fetch: the entries that follow, or Diverged when the
// replier's log has no entry at After (or one of another epoch), so the
// asker must start over from an empty log. Last is the end of the
// replier's log.
type FetchReply struct {
	From     string  `msgpack:"from"`
	Diverged bool    `msgpack:"diverged"`
	Entries  []Entry `msgpack:"entries"`
	Last     Pos     `msgpack:"last"`
}

// CommitReply answers a commit request: the coordinator's commit LSN.
type CommitReply struct {
	From   string `msgpack:"from"`
	OK     bool   `msgpack:"ok"` // false: the replier is not the coordinator
	Epoch  uint64 `msgpack:"epoch"`
	Commit uint64 `msgpack:"commit"`
}

// Outgoing is a request the node wants sent; its reply goes back to
// Node.Step, its failure to Node.Failed. Msg is a Prepare, Append or Fetch.
type Outgoing struct {
	To  string
	Msg any
}
