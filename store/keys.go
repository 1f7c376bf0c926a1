package store

import "time"

// Request keys in memory. A key is remembered here from the moment the
// writer appends it until it has been indexed into SQLite for KeyGrace; in
// that time the writer refuses a second change with the same key and
// Replay answers from here. After that, Replay reads SQLite, and the
// caller's Replay before Apply catches a late retry.

// pendingKey is a request key the writer has appended.
type pendingKey struct {
	reply    []byte
	lsn      uint64
	appended time.Time
	durable  bool // the syncer has made its entry durable
}

// keyAge is a key in append order, for pruning.
type keyAge struct {
	key      string
	lsn      uint64
	appended time.Time
}

// rememberKey records a key the writer is appending.
func (s *engine) rememberKey(key string, reply []byte, lsn uint64, now time.Time) {
	s.keysMu.Lock()
	defer s.keysMu.Unlock()
	s.keys[key] = &pendingKey{reply: reply, lsn: lsn, appended: now}
	s.keyOrder = append(s.keyOrder, keyAge{key: key, lsn: lsn, appended: now})
}

// keySeen reports whether the writer has appended key recently (and it has
// not expired).
func (s *engine) keySeen(key string) bool {
	s.keysMu.Lock()
	defer s.keysMu.Unlock()
	k, ok := s.keys[key]
	return ok && time.Since(k.appended) < s.cfg.RequestKeyTTL
}

// keysDurable marks the keys of entries up to lsn as durable.
func (s *engine) keysDurable(lsn uint64) {
	s.keysMu.Lock()
	defer s.keysMu.Unlock()
	for i := len(s.keyOrder) - 1; i >= 0; i-- {
		ka := s.keyOrder[i]
		if ka.lsn > lsn {
			continue // appended after this batch
		}
		k := s.keys[ka.key]
		if k == nil {
			continue
		}
		if k.durable {
			break // batches are acknowledged in order: the older ones are too
		}
		k.durable = true
	}
}

// durableKey returns the reply of a key held in memory, once durable.
func (s *engine) durableKey(key string) ([]byte, bool) {
	s.keysMu.Lock()
	defer s.keysMu.Unlock()
	if k, ok := s.keys[key]; ok && k.durable && time.Since(k.appended) < s.cfg.RequestKeyTTL {
		return k.reply, true
	}
	return nil, false
}

// forgetIndexedKeys drops keys indexed up to lsn that were appended more
// than KeyGrace ago.
func (s *engine) forgetIndexedKeys(lsn uint64, now time.Time) {
	s.keysMu.Lock()
	defer s.keysMu.Unlock()
	n := 0
	for _, k := range s.keyOrder {
		if k.lsn > lsn || now.Sub(k.appended) < s.cfg.KeyGrace {
			break
		}
		if pk := s.keys[k.key]; pk != nil && pk.lsn == k.lsn {
			delete(s.keys, k.key)
		}
		n++
	}
	s.keyOrder = s.keyOrder[n:]
}
