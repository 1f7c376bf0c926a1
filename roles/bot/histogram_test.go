package bot

import (
	"testing"
	"time"
)

func TestBucketsCoverEveryValue(t *testing.T) {
	prev := -1
	for _, v := range []uint64{0, 1, 63, 64, 65, 127, 128, 1000, 1 << 20, 1<<40 + 12345, 1<<63 - 1, 1<<64 - 1} {
		b := bucket(v)
		if b < prev || b >= len(histogram{}.counts) {
			t.Fatalf("bucket(%d) = %d (previous %d)", v, b, prev)
		}
		prev = b
		if m := middle(b); bucket(m) != b {
			t.Errorf("middle(%d) = %d is in bucket %d", b, m, bucket(m))
		}
	}
	for v := uint64(0); v < 1<<16; v++ { // buckets are contiguous: no value falls between two
		if d := bucket(v+1) - bucket(v); d != 0 && d != 1 {
			t.Fatalf("bucket jumps by %d at %d", d, v)
		}
	}
}

func TestPercentiles(t *testing.T) {
	var h histogram
	if h.percentile(0.5) != 0 {
		t.Fatal("empty histogram must give 0")
	}
	for i := 1; i <= 1000; i++ {
		h.record(time.Duration(i) * time.Millisecond)
	}
	for _, c := range []struct {
		q    float64
		want time.Duration
	}{{0.5, 500 * time.Millisecond}, {0.99, 990 * time.Millisecond}, {0, time.Millisecond}, {1, time.Second}} {
		got := h.percentile(c.q)
		if diff := (got - c.want).Abs(); float64(diff) > 0.035*float64(c.want) {
			t.Errorf("p%v = %v, want %v ±3.5%%", c.q*100, got, c.want)
		}
	}

	var one histogram
	one.record(1234567 * time.Nanosecond)
	if got := one.percentile(0.99); got != 1234567*time.Nanosecond {
		t.Errorf("one value: p99 = %v, want it exactly (clamped to min/max)", got)
	}
}

func TestSummaryString(t *testing.T) {
	s := Summary{Sent: 1000, Acked: 998, Errors: 2, Received: 3000, P50: 1234567 * time.Nanosecond, P99: 45678901 * time.Nanosecond, Elapsed: 2 * time.Second}
	want := "sent=1000 acked=998 errors=2 received=3000 in 2s (499.0 msg/s) latency p50=1.23ms p99=45.7ms"
	if got := s.String(); got != want {
		t.Errorf("got  %q\nwant %q", got, want)
	}
	if (Summary{}).String() != "sent=0 acked=0 errors=0 received=0 in 0s (0.0 msg/s) latency p50=0s p99=0s" {
		t.Errorf("empty summary: %q", Summary{}.String())
	}
}

func TestStatLine(t *testing.T) {
	last := Summary{Acked: 100, Elapsed: 5 * time.Second}
	now := Summary{Sent: 352, Acked: 350, Errors: 1, P50: 2 * time.Millisecond, P99: 9 * time.Millisecond, Elapsed: 10 * time.Second}
	want := "[10s] sent=352 acked=350 errors=1 received=0 50.0 msg/s p50=2ms p99=9ms"
	if got := statLine(now, last); got != want {
		t.Errorf("got  %q\nwant %q", got, want)
	}
}
