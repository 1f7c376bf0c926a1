package clock

import (
	"sync"
	"testing"
	"time"
)

func TestLamportRules(t *testing.T) {
	var l Lamport
	if got := l.Tick(); got != 1 {
		t.Fatalf("first tick = %d, want 1", got)
	}
	if got := l.Observe(10); got != 11 {
		t.Fatalf("observe 10 = %d, want 11", got)
	}
	if got := l.Observe(3); got != 12 {
		t.Fatalf("observe older 3 = %d, want 12 (max(local, received)+1)", got)
	}
	if got := l.Now(); got != 12 {
		t.Fatalf("now = %d, want 12", got)
	}
}

func TestLamportConcurrentTicksAreUnique(t *testing.T) {
	var l Lamport
	const n, per = 8, 1000
	seen := make(chan uint64, n*per)
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range per {
				seen <- l.Tick()
			}
		}()
	}
	wg.Wait()
	close(seen)
	set := map[uint64]bool{}
	for v := range seen {
		if set[v] {
			t.Fatalf("tick %d handed out twice", v)
		}
		set[v] = true
	}
	if l.Now() != n*per {
		t.Fatalf("clock = %d, want %d", l.Now(), n*per)
	}
}

type fixed struct{ t time.Time }

func (f fixed) Now() time.Time { return f.t }

func TestPhysicalSkewAndAdjust(t *testing.T) {
	base := time.Unix(1_700_000_000, 0)
	p := NewPhysical(fixed{base}, 5*time.Second)
	if got := p.Now(); !got.Equal(base.Add(5 * time.Second)) {
		t.Fatalf("skewed now = %v", got)
	}
	if off := p.Adjust(-2 * time.Second); off != -2*time.Second {
		t.Fatalf("offset = %v", off)
	}
	if got := p.Now(); !got.Equal(base.Add(3 * time.Second)) {
		t.Fatalf("adjusted now = %v", got)
	}
}
