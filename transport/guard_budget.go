package transport

import (
	"container/list"
	"sync"
	"sync/atomic"
)

// frameBudget bounds the bytes of large frames (over LargeFrame) being
// read at once: zmq4 allocates a frame's whole body as soon as it reads
// its header, so the guard hands zmq4 a large frame's header only once
// the frame has a share of the budget. Each listener has one, the dialed
// connections share dialBudget. Waiters are served in order, so a large
// frame is not starved by smaller ones.
type frameBudget struct {
	mu      sync.Mutex
	used    int64
	waiters list.List // of *budgetWaiter, first come first served
}

type budgetWaiter struct {
	n, limit int64
	ready    chan struct{} // closed when granted
}

var dialBudget frameBudget

// budgetWaiting is how many readers wait for a budget now, budgetHeld how
// many bytes all budgets have given out (for tests).
var budgetWaiting, budgetHeld atomic.Int64

// acquire takes n bytes (limit: the budget's size, from the connection's
// config), waiting while they do not fit. It returns false, holding
// nothing, if dead is closed first.
func (b *frameBudget) acquire(n, limit int64, dead <-chan struct{}) bool {
	b.mu.Lock()
	if b.waiters.Len() == 0 && b.used+n <= limit {
		b.used += n
		budgetHeld.Add(n)
		b.mu.Unlock()
		return true
	}
	w := &budgetWaiter{n: n, limit: limit, ready: make(chan struct{})}
	e := b.waiters.PushBack(w)
	b.mu.Unlock()
	gstats.largeWaits.Add(1)
	budgetWaiting.Add(1)
	defer budgetWaiting.Add(-1)
	select {
	case <-w.ready:
		return true
	case <-dead:
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	select {
	case <-w.ready: // granted meanwhile: give it back
		b.used -= n
		budgetHeld.Add(-n)
	default:
		b.waiters.Remove(e)
	}
	b.grantLocked()
	return false
}

// release gives n bytes back.
func (b *frameBudget) release(n int64) {
	b.mu.Lock()
	b.used -= n
	budgetHeld.Add(-n)
	b.grantLocked()
	b.mu.Unlock()
}

func (b *frameBudget) grantLocked() {
	for e := b.waiters.Front(); e != nil; e = b.waiters.Front() {
		w := e.Value.(*budgetWaiter)
		if b.used+w.n > w.limit {
			return
		}
		b.used += w.n
		budgetHeld.Add(w.n)
		b.waiters.Remove(e)
		close(w.ready)
	}
}

// largeHold is one connection's share of a budget, for its one large
// message in zmq4. It is released (once) when zmq4 asks for the bytes
// after that message, that is, once zmq4 has handed the message on to
// its socket's queue, or when the connection dies.
type largeHold struct {
	b    *frameBudget
	n    int64
	once sync.Once
	done chan struct{}
}

func (h *largeHold) release() {
	h.once.Do(func() {
		h.b.release(h.n)
		close(h.done)
	})
}
