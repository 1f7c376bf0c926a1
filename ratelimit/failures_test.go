package ratelimit

import (
	"testing"
	"time"
)

func TestFailuresBlockUntilTheWindowEnds(t *testing.T) {
	f := NewFailures(3, time.Minute)
	now := time.Unix(1000, 0)
	for i := range 3 {
		if _, blocked := f.Blocked("a", now); blocked {
			t.Fatalf("blocked after %d failures", i)
		}
		f.Fail("a", now.Add(time.Duration(i)*time.Second))
	}
	wait, blocked := f.Blocked("a", now.Add(10*time.Second))
	if !blocked || wait != 50*time.Second {
		t.Fatalf("after 3 failures: blocked %v, retry after %v (want 50s)", blocked, wait)
	}
	if _, blocked := f.Blocked("b", now); blocked {
		t.Fatal("another key is blocked by the first one")
	}
	if _, blocked := f.Blocked("a", now.Add(time.Minute)); blocked {
		t.Fatal("still blocked once the window has ended")
	}
	if _, blocked := NewFailures(0, time.Minute).Blocked("a", now); blocked {
		t.Fatal("max 0 blocks")
	}
}
