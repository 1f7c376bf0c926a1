package store

import (
	"fmt"
	"maps"
	"os"
	"sync/atomic"
	"time"
)

// The write path. Apply queues a request; the writer goroutine takes every
// request waiting, checks each against its view of the state, and appends
// the whole batch to the change log in one write; the syncer goroutine
// fsyncs the log and only then wakes the callers, then hands the entries
// to the indexer (indexer.go). While the syncer waits on the disk, the
// writer already appends the next batch, and the requests that arrive
// meanwhile make that batch larger: this is group commit.

// request is one change waiting in the writer's queue.
type request struct {
	change     Change
	replicated []*entry     // set instead of change: entries ordered by the coordinator, appended as they are
	state      atomic.Int32 // queued, then taken by the writer or cancelled by Apply
	id         int64        // the outcome, valid once done is closed
	lsn        uint64       // LSN of the (last) entry written for the request; 0 when none
	err        error
	done       chan struct{}
}

// The states of a request.
const (
	queued int32 = iota
	taken
	cancelled
)

// take marks r as taken by the writer; it fails if Apply has given up on r.
func (r *request) take() bool { return r.state.CompareAndSwap(queued, taken) }

// cancel marks r as cancelled; it fails if the writer has already taken r.
func (r *request) cancel() bool { return r.state.CompareAndSwap(queued, cancelled) }

// effects is what a batch adds to the durable in-memory state once synced.
type effects struct {
	users    map[string]bool
	channels map[string]bool
	accounts []*entry // entries that change the accounts, in log order
	messages int64
}

// syncBatch is an appended batch on its way to the disk and the callers.
type syncBatch struct {
	reqs    []*request
	entries []*entry
	file    *os.File // the segment the batch was written to
	effects effects
	lastLSN uint64
	closing *os.File // set on a rotation marker: close this file once synced
}

// replicated reports whether the batch appends a coordinator's entries.
func (b syncBatch) replicated() bool {
	return len(b.reqs) > 0 && b.reqs[0].replicated != nil
}

// run is the writer goroutine. It appends batches until Close, then
// appends what is still queued and hands over to the syncer.
func (s *engine) run() {
	defer close(s.toSync)
	for {
		select {
		case r := <-s.queue:
			s.appendBatch(s.collect(r))
		case <-s.stop:
			// Close has stopped new changes from entering the queue.
			for {
				select {
				case r := <-s.queue:
					s.appendBatch(s.collect(r))
				default:
					return
				}
			}
		}
	}
}

// collect returns first and every other request waiting in the queue, up to
// Config.MaxBatch, leaving out those whose callers have given up.
func (s *engine) collect(first *request) []*request {
	var reqs []*request
	if first.take() {
		reqs = append(reqs, first)
	}
	for len(reqs) < s.cfg.MaxBatch {
		select {
		case r := <-s.queue:
			if r.take() {
				reqs = append(reqs, r)
			}
		default:
			return reqs
		}
	}
	return reqs
}

// appendBatch checks reqs, writes their entries to the log in one write and
// hands the batch to the syncer. A failed check fails only its own change;
// a failed write fails the batch and every later one.
func (s *engine) appendBatch(reqs []*request) {
	if hook := s.testHookBatch.Load(); hook != nil {
		(*hook)()
	}
	if len(reqs) == 0 {
		return
	}
	if err := s.failure(); err != nil {
		// Out of service: refuse without checking (a check would
		// remember a request key that is never written).
		for _, r := range reqs {
			r.id, r.err = 0, err
			close(r.done)
		}
		return
	}
	b := syncBatch{reqs: reqs, file: s.seg, effects: effects{users: map[string]bool{}, channels: map[string]bool{}}}
	now := time.Now()
	buf := s.buf[:0]
	for _, r := range reqs {
		if r.replicated != nil {
			for _, e := range s.checkReplicated(r, now, &b.effects) {
				buf = appendRawFrame(buf, e.raw)
				b.entries = append(b.entries, e)
				b.lastLSN = e.LSN
			}
			continue
		}
		e := s.check(r, now, &b.effects)
		if e == nil {
			continue
		}
		var err error
		if buf, err = appendFrame(buf, e); err != nil {
			r.id, r.err = 0, fmt.Errorf("store: encode: %w", err)
			s.lastLSN-- // the LSN was not used
			continue
		}
		r.lsn = e.LSN
		b.entries = append(b.entries, e)
		b.lastLSN = e.LSN
	}
	s.buf = buf
	if s.failure() == nil && len(buf) > 0 {
		if s.segSize > 0 && s.segSize+int64(len(buf)) > s.cfg.SegmentSize {
			s.rotate()
			b.file = s.seg
		}
		if s.failure() != nil {
			// no new segment: nothing is written
		} else if err := s.hookErr(func(h *testHooks) func() error { return h.writeErr }); err != nil {
			s.fail(fmt.Errorf("store: write to the change log failed: %w", err))
		} else if _, err := s.seg.WriteAt(buf, s.segSize); err != nil {
			s.fail(fmt.Errorf("store: write to the change log failed: %w", err))
		}
		s.segSize += int64(len(buf))
		s.lastWritten = b.lastLSN
	}
	if err := s.failure(); err != nil {
		for _, r := range reqs {
			r.id, r.err = 0, err
		}
		b.entries, b.effects = nil, effects{}
	}
	s.toSync <- b
}

// check runs one request's state checks against the writer's view, updates
// that view, and returns the log entry to write (nil for none).
func (s *engine) check(r *request, now time.Time, fx *effects) *entry {
	ch := r.change
	if ch.RequestKey != "" && s.keySeen(ch.RequestKey) {
		r.err = ErrDuplicate
		return nil
	}
	e := &entry{Epoch: s.epoch.Load()}
	switch {
	case ch.Noop:
		e.Kind, e.TS = entryNoop, now.UnixMilli()
	case ch.Login != nil:
		l := ch.Login
		e.Kind, e.User, e.TS = entryLogin, l.User, l.Timestamp.UnixMilli()
		e.Claim, e.Hash, e.PubKey = l.Claim, l.PasswordHash, l.PublicKey
		if l.Token != nil {
			e.Token, e.Expires = l.Token.Hash, l.Token.Expires.UnixMilli()
		}
		if r.err = s.checkAuth(ch, e); r.err == nil && !s.wUsers[e.User] {
			s.wUsers[e.User], fx.users[e.User] = true, true
		}
	case ch.Logout != nil:
		e.Kind, e.User, e.TS = entryLogout, ch.Logout.User, ch.Logout.Timestamp.UnixMilli()
		r.err = s.checkAuth(ch, e)
	case ch.Channel != nil:
		e.Kind, e.Name, e.User, e.TS = entryChannel, ch.Channel.Name, ch.Channel.Creator, ch.Channel.Timestamp.UnixMilli()
		if s.wChannels[e.Name] {
			r.err = ErrChannelExists
		} else {
			s.wChannels[e.Name], fx.channels[e.Name] = true, true
		}
	case ch.Message != nil:
		m := ch.Message
		e.User, e.Text, e.TS, e.Clock = m.From, m.Text, m.Timestamp.UnixMilli(), m.Clock
		if m.Kind == Post {
			e.Kind, e.Name = entryPost, m.Channel
			if !s.wChannels[m.Channel] {
				r.err = ErrNoChannel
			}
		} else {
			e.Kind, e.To = entryDirect, m.To
			if !s.wUsers[m.To] {
				r.err = ErrNoUser
			}
		}
		if r.err == nil {
			r.err = s.checkAuth(ch, e)
		}
		if r.err == nil {
			s.nextID++
			e.ID, r.id = s.nextID, s.nextID
			fx.messages++
		}
	}
	if r.err != nil {
		if ch.RequestKey == "" {
			return nil
		}
		*e = entry{Kind: entryKey, TS: now.UnixMilli(), Epoch: e.Epoch}
	}
	if hasEffect(e) {
		s.wAccounts.apply(e)
		s.wAccounts.prune(now.UnixMilli())
		fx.accounts = append(fx.accounts, e)
	}
	if ch.RequestKey != "" {
		e.Key, e.HasKey, e.Reply, e.KeyTS = ch.RequestKey, true, ch.Reply, now.UnixMilli()
		if ch.ReplyFunc != nil {
			e.Reply = ch.ReplyFunc(r.id, r.err)
		}
	}
	s.lastLSN++
	e.LSN = s.lastLSN
	if e.HasKey {
		s.rememberKey(e.Key, e.Reply, e.LSN, now)
	}
	return e
}

// checkReplicated takes entries another server ordered (replication): they
// must follow this log without a gap; they are not checked against the
// state again (their coordinator did), only applied to the writer's view.
func (s *engine) checkReplicated(r *request, now time.Time, fx *effects) []*entry {
	for i, e := range r.replicated {
		if want := s.lastLSN + 1 + uint64(i); e.LSN != want {
			r.err = fmt.Errorf("%w: entry %d where %d comes next", ErrGap, e.LSN, want)
			return nil
		}
	}
	for _, e := range r.replicated {
		switch e.Kind {
		case entryLogin:
			if !s.wUsers[e.User] {
				s.wUsers[e.User], fx.users[e.User] = true, true
			}
		case entryChannel:
			if !s.wChannels[e.Name] {
				s.wChannels[e.Name], fx.channels[e.Name] = true, true
			}
		case entryPost, entryDirect:
			s.nextID = max(s.nextID, e.ID)
			fx.messages++
		}
		if hasEffect(e) {
			s.wAccounts.apply(e)
			s.wAccounts.prune(now.UnixMilli())
			fx.accounts = append(fx.accounts, e)
		}
		if e.HasKey {
			s.rememberKey(e.Key, e.Reply, e.LSN, now)
		}
		s.lastLSN = e.LSN
	}
	r.lsn = s.lastLSN
	return r.replicated
}

// rotate starts a new log segment for the entries after the last one
// written. The syncer closes the old one after its last batch is synced.
func (s *engine) rotate() {
	next := s.lastWritten + 1
	f, err := createSegment(s.logDir, next, s.cfg.SegmentSize)
	if err != nil {
		s.fail(fmt.Errorf("store: cannot start a new log segment: %w", err))
		return
	}
	s.toSync <- syncBatch{closing: s.seg}
	s.seg, s.segSize = f, 0
	s.segMu.Lock()
	s.segFirsts = append(s.segFirsts, next)
	s.segMu.Unlock()
}

// syncer makes appended batches durable, wakes their callers and passes
// their entries to the indexer. One fsync covers every batch appended
// before it started, so it takes all the batches waiting at once.
func (s *engine) syncer() {
	defer close(s.toIndex)
	var lastSync time.Time
	// failed is set once an fsync has failed: then nothing more is
	// acknowledged, since the pages that fsync should have written may
	// never reach the disk (Linux marks them clean anyway), and a later
	// fsync that succeeds would leave a hole before what it acknowledges.
	var failed error
	for first := range s.toSync {
		batches := []syncBatch{first}
		// Let more batches join this fsync until SyncInterval has passed
		// since the last one — except for entries replicated from the
		// coordinator: it sends the next ones only after this fsync, so
		// waiting would only add to every write's latency.
		pause := max(0, s.cfg.SyncInterval-time.Since(lastSync))
		if first.replicated() {
			pause = 0
		}
		wait := time.NewTimer(pause)
	more:
		for {
			select {
			case b, ok := <-s.toSync:
				if !ok {
					break more
				}
				batches = append(batches, b)
			case <-wait.C:
				break more
			}
		}
		wait.Stop()
		lastSync = time.Now()
		err := failed
		synced := map[*os.File]bool{}
		for _, b := range batches {
			if err == nil && b.file != nil && len(b.entries) > 0 && !synced[b.file] {
				synced[b.file] = true
				e := syncData(b.file)
				if e == nil {
					e = s.hookErr(func(h *testHooks) func() error { return h.syncErr })
				}
				if e != nil {
					s.fail(fmt.Errorf("store: fsync of the change log failed: %w", e))
					err = s.failure()
					failed = err
				}
			}
		}
		if len(synced) > 0 && err == nil {
			s.commits.Add(1) // one durability point for all these batches
		}
		for _, b := range batches {
			if b.closing != nil {
				b.closing.Close()
				continue
			}
			s.acknowledge(b, err)
		}
	}
}

// acknowledge publishes a durable batch's effects, wakes its callers and
// queues its entries for the indexer.
func (s *engine) acknowledge(b syncBatch, err error) {
	if err == nil && len(b.entries) > 0 {
		s.mu.Lock()
		maps.Copy(s.users, b.effects.users)
		maps.Copy(s.channels, b.effects.channels)
		for _, e := range b.effects.accounts {
			s.accounts.apply(e)
		}
		if len(b.effects.accounts) > 0 {
			s.accounts.prune(time.Now().UnixMilli())
		}
		s.mu.Unlock()
		s.messages.Add(b.effects.messages)
		for _, e := range b.entries {
			if e.Clock > s.maxClock.Load() {
				s.maxClock.Store(e.Clock) // only the syncer writes it
			}
		}
		s.keysDurable(b.lastLSN)
		s.remember(b.entries)
		s.ackedLSN.Store(b.lastLSN)
		s.durableEpoch.Store(b.entries[len(b.entries)-1].Epoch)
		s.wake()
	}
	if err == nil {
		s.batches.Add(1)
		s.changes.Add(int64(len(b.reqs)))
	}
	for _, r := range b.reqs {
		if err != nil {
			r.id, r.err = 0, err
		}
		close(r.done)
	}
	if err == nil && len(b.entries) > 0 {
		s.toIndex <- b.entries
	}
}

// fail puts the engine out of service for writes: after a failed write or
// fsync nobody can tell what is on disk, so every later Apply fails until
// the store is opened again, which reads the log back and so counts only
// what is truly there. The Store does that itself (opts.onFail, see
// Store.repair).
func (s *engine) fail(err error) {
	if s.broken.CompareAndSwap(nil, &err) && s.opts.onFail != nil {
		s.opts.onFail()
	}
}

// failure returns the error that put the engine out of service, if any.
func (s *engine) failure() error {
	if p := s.broken.Load(); p != nil {
		return fmt.Errorf("%w (%w; the store reopens itself every %v until that works)", ErrUnavailable, *p, s.cfg.RetryInterval)
	}
	return nil
}
