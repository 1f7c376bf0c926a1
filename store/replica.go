package store

import (
	"context"
	"fmt"
	"runtime"

	"github.com/vmihailenco/msgpack/v5"
)

// What replication needs of the store. The change log is the replication
// stream: every entry has a log sequence number (LSN) and the epoch of the
// coordinator that ordered it. The coordinator's store orders changes
// itself (Submit); a replica appends the coordinator's entries as they are
// (Append), so every server holds the same entries under the same LSNs,
// with the same message ids. The newest durable entries are kept in
// memory (the tail) for the replication stream; older ones are read from
// SQLite's log table.

// Entry is one change log entry as replicated: its position, the epoch of
// the coordinator that ordered it, and its encoding in the log (opaque to
// everyone but the store).
type Entry struct {
	LSN   uint64 `msgpack:"lsn"`
	Epoch uint64 `msgpack:"epoch"`
	Data  []byte `msgpack:"data"`
}

// remember adds durable entries to the in-memory tail.
func (s *engine) remember(entries []*entry) {
	s.tailMu.Lock()
	defer s.tailMu.Unlock()
	s.tail = append(s.tail, entries...)
	if n := len(s.tail); n > 2*s.cfg.TailEntries {
		s.tail = append([]*entry(nil), s.tail[n-s.cfg.TailEntries:]...)
	}
}

// wake tells whoever waits in Durable that ackedLSN has grown.
func (s *engine) wake() {
	s.notifyMu.Lock()
	close(s.notify)
	s.notify = make(chan struct{})
	s.notifyMu.Unlock()
}

// wakeForGood releases the waiters at Close: the channel they hold is
// closed and never replaced, so they look again (and find the store closed).
func (s *engine) wakeForGood() {
	s.notifyMu.Lock()
	close(s.notify)
	s.notify = make(chan struct{})
	close(s.notify)
	s.notifyMu.Unlock()
}

// durable returns the last durable LSN and a channel closed once it grows.
func (s *engine) durable() (uint64, <-chan struct{}) {
	s.notifyMu.Lock()
	defer s.notifyMu.Unlock()
	return s.ackedLSN.Load(), s.notify
}

// last returns the LSN and epoch of the last durable entry.
//
// The syncer publishes a batch as remember, ackedLSN, durableEpoch (in that
// order, and not under one lock), so the two atomics read together may
// pair a new LSN with the previous epoch. The epoch is taken from the tail
// instead, which already holds the entry at ackedLSN: under tailMu the tail
// cannot change, and an empty tail means nothing was acknowledged since
// Open, so durableEpoch is still the one recover read.
func (s *engine) last() (lsn, epoch uint64) {
	for {
		s.tailMu.Lock()
		lsn = s.ackedLSN.Load()
		if len(s.tail) == 0 {
			epoch = s.durableEpoch.Load()
			s.tailMu.Unlock()
			return lsn, epoch
		}
		if first := s.tail[0].LSN; lsn >= first && lsn-first < uint64(len(s.tail)) {
			epoch = s.tail[lsn-first].Epoch
			s.tailMu.Unlock()
			return lsn, epoch
		}
		s.tailMu.Unlock()
		// The syncer has remembered a batch and not yet published its
		// ackedLSN (the entry at the old one may have been trimmed, or
		// the tail was empty before): that takes a moment.
		runtime.Gosched()
	}
}

// fromTail returns the tail's entries after lsn (at most max), and whether
// the tail reaches back that far.
func (s *engine) fromTail(after uint64, max int) ([]*entry, bool) {
	s.tailMu.Lock()
	defer s.tailMu.Unlock()
	if len(s.tail) == 0 || s.tail[0].LSN > after+1 {
		return nil, false
	}
	i := int(after + 1 - s.tail[0].LSN)
	if i >= len(s.tail) {
		return nil, true
	}
	return append([]*entry(nil), s.tail[i:min(len(s.tail), i+max)]...), true
}

// entriesAfter returns up to max durable entries after lsn, in order, and
// at most about maxBytes of them (always at least one when there is one).
func (s *engine) entriesAfter(ctx context.Context, after uint64, max, maxBytes int) ([]Entry, error) {
	if err := s.readErr(); err != nil {
		return nil, err
	}
	acked := s.ackedLSN.Load()
	if after >= acked || max <= 0 {
		return nil, nil
	}
	var out []Entry
	size := 0
	add := func(lsn, epoch uint64, data []byte) bool {
		if len(out) > 0 && size+len(data) > maxBytes {
			return false
		}
		out = append(out, Entry{LSN: lsn, Epoch: epoch, Data: data})
		size += len(data)
		return len(out) < max
	}
	if tail, ok := s.fromTail(after, max); ok {
		for _, e := range tail {
			if e.LSN > acked || !add(e.LSN, e.Epoch, e.raw) {
				break
			}
		}
		return out, nil
	}
	if err := s.waitIndexed(); err != nil {
		return nil, err
	}
	rows, err := s.rdb.QueryContext(ctx, "SELECT lsn, epoch, entry FROM log WHERE lsn > ? AND lsn <= ? ORDER BY lsn LIMIT ?",
		int64(after), int64(acked), max)
	if err != nil {
		return nil, s.sqlErr(err)
	}
	defer rows.Close()
	for rows.Next() {
		var lsn, epoch int64
		var data []byte
		if err := rows.Scan(&lsn, &epoch, &data); err != nil {
			return nil, s.sqlErr(err)
		}
		if !add(uint64(lsn), uint64(epoch), data) {
			break
		}
	}
	if err := rows.Err(); err != nil {
		return nil, s.sqlErr(err)
	}
	if len(out) == 0 || out[0].LSN != after+1 {
		// Entries up to acked are all in SQLite (waitIndexed), so none
		// means the log table lacks them (the indexer failed, or it
		// predates the log table).
		return nil, fmt.Errorf("store: the log lacks entry %d", after+1)
	}
	return out, nil
}

// epochAt returns the epoch of the durable entry at lsn (0 for lsn 0), and
// false when there is no such entry.
func (s *engine) epochAt(ctx context.Context, lsn uint64) (uint64, bool, error) {
	if lsn == 0 {
		return 0, true, nil
	}
	if lsn > s.ackedLSN.Load() {
		return 0, false, nil
	}
	if tail, ok := s.fromTail(lsn-1, 1); ok && len(tail) == 1 {
		return tail[0].Epoch, true, nil
	}
	if err := s.readErr(); err != nil {
		return 0, false, err
	}
	if err := s.waitIndexed(); err != nil {
		return 0, false, err
	}
	var epoch int64
	err := s.rdb.QueryRowContext(ctx, "SELECT epoch FROM log WHERE lsn = ?", int64(lsn)).Scan(&epoch)
	if err != nil {
		return 0, false, s.sqlErr(err)
	}
	return uint64(epoch), true, nil
}

// appendReplicated appends entries ordered by the coordinator. They must
// follow the last entry of the log (ErrGap otherwise). It returns the LSN
// of the last entry once all are durable.
func (s *engine) appendReplicated(ctx context.Context, entries []Entry) (uint64, error) {
	if len(entries) == 0 {
		lsn, _ := s.last()
		return lsn, nil
	}
	decoded := make([]*entry, len(entries))
	for i, re := range entries {
		var e entry
		if err := msgpack.Unmarshal(re.Data, &e); err != nil {
			return 0, fmt.Errorf("store: replicated entry %d: %w", re.LSN, err)
		}
		if e.LSN != re.LSN || e.Epoch != re.Epoch {
			return 0, fmt.Errorf("store: replicated entry %d does not match its header", re.LSN)
		}
		e.raw = re.Data
		decoded[i] = &e
	}
	_, lsn, err := s.enqueue(ctx, &request{replicated: decoded, done: make(chan struct{})})
	return lsn, err
}
