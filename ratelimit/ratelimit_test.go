package ratelimit

import (
	"testing"
	"time"
)

func TestBurstThenRate(t *testing.T) {
	l := New(Config{Rate: 10, Burst: 5, Idle: time.Minute})
	now := time.Unix(0, 0)
	for i := range 5 {
		if !l.Allow("a", now) {
			t.Fatalf("request %d of the burst refused", i)
		}
	}
	if l.Allow("a", now) {
		t.Fatal("request beyond the burst allowed")
	}
	if !l.Allow("b", now) {
		t.Fatal("another client is limited by the first one")
	}
	// 10 per second: one token every 100 ms.
	if l.Allow("a", now.Add(50*time.Millisecond)) {
		t.Fatal("allowed before a token was refilled")
	}
	if !l.Allow("a", now.Add(150*time.Millisecond)) {
		t.Fatal("refused after a token was refilled")
	}
	// A long pause refills to the burst, not beyond.
	later := now.Add(time.Hour)
	for i := range 5 {
		if !l.Allow("a", later) {
			t.Fatalf("request %d after refill refused", i)
		}
	}
	if l.Allow("a", later) {
		t.Fatal("saved more than the burst")
	}
}

func TestIdleClientsAreForgotten(t *testing.T) {
	l := New(Config{Rate: 1, Burst: 1, Idle: time.Second})
	now := time.Unix(0, 0)
	l.Allow("a", now)
	l.Allow("b", now)
	l.Allow("c", now.Add(2*time.Second))
	if n := l.Clients(); n != 1 {
		t.Fatalf("%d clients remembered, want 1", n)
	}
}

func TestZeroRateIsOff(t *testing.T) {
	l := New(Config{})
	for range 1000 {
		if !l.Allow("a", time.Unix(0, 0)) {
			t.Fatal("a disabled limiter refused")
		}
	}
	var none *Limiter
	if !none.Allow("a", time.Now()) {
		t.Fatal("a nil limiter refused")
	}
}
