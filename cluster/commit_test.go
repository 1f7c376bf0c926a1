package cluster

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"chat/clock"
	"chat/internal/poll"
	"chat/replication"
	"chat/store"
)

// startAlone starts the Node of a server that runs alone (no reference)
// over a fresh store, and waits until it leads with its log committed.
func startAlone(t *testing.T) (*Node, *store.Store) {
	t.Helper()
	dir := t.TempDir()
	st, err := store.Open(store.Config{Path: filepath.Join(dir, "chat.db")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	cfg := DefaultConfig("s1")
	cfg.DataDir = dir
	n, err := Start(context.Background(), cfg, Deps{Store: st, Lamport: &clock.Lamport{}, Clock: clock.NewPhysical(nil, 0)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	poll.WaitFor(t, 5*time.Second, "the server to lead with its log committed", func() bool {
		lsn, _ := st.Last()
		n.mu.Lock()
		defer n.mu.Unlock()
		return n.repl.Role() == replication.Leader && lsn > 0 && n.repl.Commit() == lsn
	})
	return n, st
}

// The writes waiting in Committed are woken when the commit LSN grows,
// not by every pass of afterLocked (each reply, tick and log growth): on a
// busy coordinator those came several times per commit, and each woke
// every waiter for nothing.
func TestCommitWaitersWokenOnlyByChange(t *testing.T) {
	n, st := startAlone(t)
	ch := n.commitChanged()
	for range 3 {
		n.mu.Lock()
		n.afterLocked(time.Now())
		n.mu.Unlock()
	}
	if poll.Closed(ch) {
		t.Fatal("the waiters were woken though the commit LSN, the role and the epoch did not change")
	}
	if _, err := st.Apply(context.Background(), store.Change{Noop: true}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ch:
	case <-time.After(5 * time.Second):
		t.Fatal("the commit LSN grew and the waiters were not woken")
	}
}

// A read waiting in readIndex is woken by every pass of afterLocked: it
// waits for acknowledgements of its heartbeat too, which do not move the
// commit LSN.
func TestReadersWokenByEveryPass(t *testing.T) {
	n, _ := startAlone(t)
	n.readers.Add(1)
	defer n.readers.Add(-1)
	ch := n.commitChanged()
	n.mu.Lock()
	n.afterLocked(time.Now())
	n.mu.Unlock()
	if !poll.Closed(ch) {
		t.Fatal("a read waits, and afterLocked did not wake it")
	}
}
