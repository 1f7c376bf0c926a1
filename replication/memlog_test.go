package replication

import (
	"fmt"
	"slices"
)

// memLog is a Log in memory for the tests: a slice of entries and a
// promise. Every write is "durable" at once. Like the store, it refuses
// entries that do not follow its last one.
type memLog struct {
	entries     []Entry
	promise     Promise
	epoch       uint64 // what client writes are stamped with (set by StartEpoch)
	resets      int
	truncations int
}

func (l *memLog) Last() Pos {
	if len(l.entries) == 0 {
		return Pos{}
	}
	return l.entries[len(l.entries)-1].Pos()
}

func (l *memLog) EpochAt(lsn uint64) (uint64, bool) {
	if lsn == 0 {
		return 0, true
	}
	if lsn > uint64(len(l.entries)) {
		return 0, false
	}
	return l.entries[lsn-1].Epoch, true
}

func (l *memLog) Entries(after uint64, max, maxBytes int) ([]Entry, error) {
	if after >= uint64(len(l.entries)) {
		return nil, nil
	}
	var out []Entry
	size := 0
	for _, e := range l.entries[after:] {
		if len(out) >= max || (len(out) > 0 && size+len(e.Data) > maxBytes) {
			break
		}
		out = append(out, e)
		size += len(e.Data)
	}
	return out, nil
}

func (l *memLog) Append(entries []Entry) error {
	for i, e := range entries {
		if want := uint64(len(l.entries)) + 1; e.LSN != want {
			return fmt.Errorf("memlog: entry %d of %d has LSN %d, want %d", i, len(entries), e.LSN, want)
		}
		e.Data = slices.Clone(e.Data)
		l.entries = append(l.entries, e)
	}
	return nil
}

func (l *memLog) StartEpoch(epoch uint64) (uint64, error) {
	l.epoch = epoch
	lsn := uint64(len(l.entries)) + 1
	l.entries = append(l.entries, Entry{LSN: lsn, Epoch: epoch, Data: []byte("noop")})
	return lsn, nil
}

func (l *memLog) Reset() error {
	l.entries = nil
	l.resets++
	return nil
}

func (l *memLog) SavePromise(p Promise) error {
	l.promise = p
	return nil
}

// write is a client write on a leader: the next entry, of the epoch
// StartEpoch set. It returns the entry's LSN.
func (l *memLog) write(data string) uint64 {
	lsn := uint64(len(l.entries)) + 1
	l.entries = append(l.entries, Entry{LSN: lsn, Epoch: l.epoch, Data: []byte(data)})
	return lsn
}

// add appends an entry of any epoch: a test's way to build a history.
func (l *memLog) add(epoch uint64, data string) {
	lsn := uint64(len(l.entries)) + 1
	l.entries = append(l.entries, Entry{LSN: lsn, Epoch: epoch, Data: []byte(data)})
}

// data returns the entries' data, to compare logs in one line.
func (l *memLog) data() []string {
	var out []string
	for _, e := range l.entries {
		out = append(out, fmt.Sprintf("%d:%s", e.Epoch, e.Data))
	}
	return out
}

// TruncateAfter makes memLog a Truncater.
func (l *memLog) TruncateAfter(lsn uint64) error {
	if lsn < uint64(len(l.entries)) {
		l.entries = l.entries[:lsn]
		l.truncations++
	}
	return nil
}

// resetOnly is a memLog without TruncateAfter, as the store is today.
type resetOnly struct{ l *memLog }

func (r resetOnly) Last() Pos                                   { return r.l.Last() }
func (r resetOnly) EpochAt(lsn uint64) (uint64, bool)           { return r.l.EpochAt(lsn) }
func (r resetOnly) Entries(a uint64, m, b int) ([]Entry, error) { return r.l.Entries(a, m, b) }
func (r resetOnly) Append(entries []Entry) error                { return r.l.Append(entries) }
func (r resetOnly) StartEpoch(epoch uint64) (uint64, error)     { return r.l.StartEpoch(epoch) }
func (r resetOnly) Reset() error                                { return r.l.Reset() }
func (r resetOnly) SavePromise(p Promise) error                 { return r.l.SavePromise(p) }
