package cluster

import (
	"context"

	"chat/clock"
	"chat/replication"
	"chat/store"
)

// storeLog is replication.Log over the server's store: the store's change
// log is the replication stream.
type storeLog struct {
	st      *store.Store
	lamport *clock.Lamport
	save    func(replication.Promise) error
}

func (l storeLog) Last() replication.Pos {
	lsn, epoch := l.st.Last()
	return replication.Pos{LSN: lsn, Epoch: epoch}
}

func (l storeLog) EpochAt(lsn uint64) (uint64, bool) {
	epoch, ok, err := l.st.EpochAt(context.Background(), lsn)
	return epoch, ok && err == nil
}

func (l storeLog) Entries(after uint64, max, maxBytes int) ([]replication.Entry, error) {
	got, err := l.st.EntriesAfter(context.Background(), after, max, maxBytes)
	if err != nil {
		return nil, err
	}
	out := make([]replication.Entry, len(got))
	for i, e := range got {
		out[i] = replication.Entry{LSN: e.LSN, Epoch: e.Epoch, Data: e.Data}
	}
	return out, nil
}

func (l storeLog) Append(entries []replication.Entry) error {
	in := make([]store.Entry, len(entries))
	for i, e := range entries {
		in[i] = store.Entry{LSN: e.LSN, Epoch: e.Epoch, Data: e.Data}
	}
	_, err := l.st.Append(context.Background(), in)
	return err
}

func (l storeLog) StartEpoch(epoch uint64) (uint64, error) {
	l.lamport.Observe(l.st.MaxClock()) // the new coordinator's messages come after every stored one
	l.st.SetEpoch(epoch)
	_, lsn, err := l.st.Submit(context.Background(), store.Change{Noop: true})
	return lsn, err
}

func (l storeLog) Reset() error { return l.st.Reset() }

// TruncateAfter makes storeLog a replication.Truncater: a divergent tail
// is dropped, the entries before it kept.
func (l storeLog) TruncateAfter(lsn uint64) error { return l.st.TruncateAfter(lsn) }

func (l storeLog) SavePromise(p replication.Promise) error { return l.save(p) }
