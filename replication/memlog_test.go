package replication

import "fmt"

// memLog is the tests' MemLog: it also counts the Resets and the
// truncations a Node made, and builds histories by hand.
type memLog struct {
	*MemLog
	resets      int
	truncations int
}

func newMemLog() *memLog {
	l := &memLog{MemLog: &MemLog{}}
	l.OnReset = func() { l.resets++ }
	l.OnTruncate = func(uint64) { l.truncations++ }
	return l
}

// write is a client write on a leader: the next entry, of the epoch
// StartEpoch set. It returns the entry's LSN.
func (l *memLog) write(data string) uint64 { return l.Write([]byte(data)).LSN }

// addEntry appends an entry of any epoch: a test's way to build a history.
func (l *memLog) addEntry(epoch uint64, data string) {
	l.add(Entry{LSN: uint64(len(l.entries)) + 1, Epoch: epoch, Data: []byte(data)})
}

// data returns the entries' data, to compare logs in one line.
func (l *memLog) data() []string {
	var out []string
	for _, e := range l.entries {
		out = append(out, fmt.Sprintf("%d:%s", e.Epoch, e.Data))
	}
	return out
}
