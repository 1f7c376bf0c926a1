package replication

import (
	"errors"
	"fmt"
	"slices"
)

// ErrGap is MemLog.Append's error for entries that do not follow the last
// one, as the store refuses them.
var ErrGap = errors.New("memlog: entries do not follow the log's last one")

// MemLog is a Log (and a Truncater) in memory, for the tests of this
// package and the simulator (internal/sim), with a disk's crash semantics:
// every call returns once its effect is "durable", so a crash (Crash)
// keeps every entry and the promise, and forgets only what the store keeps
// in memory (the epoch StartEpoch stamps writes with).
//
// The hooks, when set, see every change: the simulator checks its
// invariants there.
type MemLog struct {
	entries []Entry
	promise Promise
	epoch   uint64 // stamped on Write; set by StartEpoch, lost by Crash

	OnAppend   func(e Entry)              // after each entry is appended
	OnReset    func()                     // after Reset
	OnTruncate func(lsn uint64)           // after TruncateAfter removed entries
	OnPromise  func(old, promise Promise) // before a promise is saved
}

var (
	_ Log       = (*MemLog)(nil)
	_ Truncater = (*MemLog)(nil)
)

// Last returns the position of the last entry.
func (l *MemLog) Last() Pos {
	if len(l.entries) == 0 {
		return Pos{}
	}
	return l.entries[len(l.entries)-1].Pos()
}

// EpochAt returns the epoch of the entry at lsn (0, true for lsn 0).
func (l *MemLog) EpochAt(lsn uint64) (uint64, bool) {
	if lsn == 0 {
		return 0, true
	}
	if lsn > uint64(len(l.entries)) {
		return 0, false
	}
	return l.entries[lsn-1].Epoch, true
}

// Entries returns up to max entries after lsn, about maxBytes of data at
// most but at least one when there is one.
func (l *MemLog) Entries(after uint64, max, maxBytes int) ([]Entry, error) {
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

// Append appends entries that follow the last one; it appends nothing and
// returns ErrGap when they do not.
func (l *MemLog) Append(entries []Entry) error {
	for i, e := range entries {
		if want := uint64(len(l.entries)) + 1 + uint64(i); e.LSN != want {
			return fmt.Errorf("%w: entry %d of %d has LSN %d, want %d", ErrGap, i+1, len(entries), e.LSN, want)
		}
	}
	for _, e := range entries {
		e.Data = slices.Clone(e.Data) // the caller may reuse its buffers
		l.add(e)
	}
	return nil
}

// StartEpoch appends a noop of epoch and stamps later Writes with epoch.
func (l *MemLog) StartEpoch(epoch uint64) (uint64, error) {
	l.epoch = epoch
	e := Entry{LSN: uint64(len(l.entries)) + 1, Epoch: epoch, Data: []byte("noop")}
	l.add(e)
	return e.LSN, nil
}

// Reset empties the log.
func (l *MemLog) Reset() error {
	l.entries = nil
	if l.OnReset != nil {
		l.OnReset()
	}
	return nil
}

// TruncateAfter removes the entries after lsn.
func (l *MemLog) TruncateAfter(lsn uint64) error {
	if lsn < uint64(len(l.entries)) {
		l.entries = l.entries[:lsn]
		if l.OnTruncate != nil {
			l.OnTruncate(lsn)
		}
	}
	return nil
}

// SavePromise keeps the promise.
func (l *MemLog) SavePromise(p Promise) error {
	if l.OnPromise != nil {
		l.OnPromise(l.promise, p)
	}
	l.promise = p
	return nil
}

// Promise returns the promise kept, as a restarted server reads it.
func (l *MemLog) Promise() Promise { return l.promise }

// Write appends a client's write as the store orders it on a leader: the
// next LSN, stamped with the epoch of the last StartEpoch. It returns the
// entry.
func (l *MemLog) Write(data []byte) Entry {
	e := Entry{LSN: uint64(len(l.entries)) + 1, Epoch: l.epoch, Data: data}
	l.add(e)
	return e
}

// Crash forgets what a process keeps in memory only.
func (l *MemLog) Crash() { l.epoch = 0 }

// All returns every entry, oldest first (the log's own slice: read it,
// do not change it).
func (l *MemLog) All() []Entry { return l.entries }

// Len returns the number of entries.
func (l *MemLog) Len() int { return len(l.entries) }

// At returns the entry at lsn.
func (l *MemLog) At(lsn uint64) (Entry, bool) {
	if lsn == 0 || lsn > uint64(len(l.entries)) {
		return Entry{}, false
	}
	return l.entries[lsn-1], true
}

func (l *MemLog) add(e Entry) {
	l.entries = append(l.entries, e)
	if l.OnAppend != nil {
		l.OnAppend(e)
	}
}

// ResetOnly is a MemLog without TruncateAfter: a Node empties such a log
// when it diverges (which loses writes: the simulator shows it).
type ResetOnly struct{ L *MemLog }

var _ Log = ResetOnly{}

func (r ResetOnly) Last() Pos                         { return r.L.Last() }
func (r ResetOnly) EpochAt(lsn uint64) (uint64, bool) { return r.L.EpochAt(lsn) }
func (r ResetOnly) Entries(after uint64, max, maxBytes int) ([]Entry, error) {
	return r.L.Entries(after, max, maxBytes)
}
func (r ResetOnly) Append(entries []Entry) error            { return r.L.Append(entries) }
func (r ResetOnly) StartEpoch(epoch uint64) (uint64, error) { return r.L.StartEpoch(epoch) }
func (r ResetOnly) Reset() error                            { return r.L.Reset() }
func (r ResetOnly) SavePromise(p Promise) error             { return r.L.SavePromise(p) }
