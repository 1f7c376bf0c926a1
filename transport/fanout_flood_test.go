package transport

import (
	"fmt"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/go-zeromq/zmq4"

	"chat/internal/zmtptest"
)

// Issue 9: "subscriptions cost quadratic time": one SUB sending 100k
// topics kept the broker busy for ~40 s, slowing everyone, and it went on
// after that SUB had gone.

// floodSubscriptions is n ZMTP 3.0 subscription messages (\x01 + topic),
// as libzmq sends them.
func floodSubscriptions(n int) []byte {
	var b []byte
	for i := range n {
		b = append(b, zmtptest.Frame(fmt.Appendf([]byte{1}, "flood/%07d", i), false, false)...)
	}
	return b
}

// fanoutSubscriber is a zmq4 SUB on f subscribed to topic; it counts what
// it receives and records when the last message came.
type fanoutSubscriber struct {
	got  atomic.Int64
	last atomic.Int64 // sequence number of the last message received
}

func newFanoutSubscriber(t *testing.T, f *Fanout, topic string) *fanoutSubscriber {
	t.Helper()
	sub, err := DialSocket(t.Context(), zmq4.NewSub, DialableEndpoint(f.Addr()), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sub.Close() })
	if err := sub.SetOption(zmq4.OptionSubscribe, topic); err != nil {
		t.Fatal(err)
	}
	s := &fanoutSubscriber{}
	go func() {
		for {
			m, err := sub.Recv()
			if err != nil {
				return
			}
			if len(m.Frames) == 2 {
				var seq int64
				fmt.Sscan(string(m.Frames[1]), &seq)
				s.last.Store(seq)
				s.got.Add(1)
			}
		}
	}()
	return s
}

// deliveredWithin publishes numbered messages on topic until s receives
// one published after the call, and returns how long that took.
func deliveredWithin(t *testing.T, f *Fanout, s *fanoutSubscriber, topic string, seq *int64, limit time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	first := *seq + 1
	for s.last.Load() < first {
		if time.Since(start) > limit {
			t.Fatalf("no publication on %q delivered within %v", topic, limit)
		}
		*seq++
		f.Publish([][]byte{[]byte(topic), fmt.Append(nil, *seq)})
		time.Sleep(2 * time.Millisecond) // publishing pace, not synchronisation
	}
	return time.Since(start)
}

func TestFanoutSubscriptionFlood(t *testing.T) {
	const floodTopics = 100_000
	const limit = 10 * time.Second // generous: about 0.1 s expected, ~40 s before issue 9
	f, err := ListenFanout(t.Context(), "tcp://127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	var seq int64
	old := newFanoutSubscriber(t, f, "news")
	deliveredWithin(t, f, old, "news", &seq, limit)

	cpu0 := cpuTime()
	flood := zmtptest.Dial(t, sockAddr2(f))
	flood.Handshake(t, 0, "SUB")
	subs := floodSubscriptions(floodTopics)
	start := time.Now()
	wrote := make(chan time.Duration, 1)
	go func() {
		_ = flood.Conn.SetWriteDeadline(time.Now().Add(5 * time.Minute))
		flood.Conn.Write(subs)
		wrote <- time.Since(start)
		flood.Conn.Close() // and gone: its subscriptions are no one's work any more
	}()

	// a subscriber already there keeps getting its publications
	took := deliveredWithin(t, f, old, "news", &seq, limit)
	t.Logf("during the flood: a connected subscriber's publication delivered in %v", took.Round(time.Millisecond))
	// a new one is served at once
	newcomer := newFanoutSubscriber(t, f, "news2")
	took = deliveredWithin(t, f, newcomer, "news2", &seq, limit)
	t.Logf("during the flood: a new subscriber's first publication delivered %v after the flood began", time.Since(start).Round(time.Millisecond))

	w := <-wrote
	t.Logf("the flooder wrote %d subscriptions (%d bytes) in %v and disconnected", floodTopics, len(subs), w.Round(time.Millisecond))
	gone := time.Now()
	waitFor(t, limit, "the flooder's work to end once it has gone", func() bool { return f.Subscribers() == 2 })
	t.Logf("the flooder's goroutine ended %v after it disconnected (%v after the flood began)",
		time.Since(gone).Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
	t.Logf("CPU time of the whole process from the flood to the end of its work: %v", (cpuTime() - cpu0).Round(time.Millisecond))
	deliveredWithin(t, f, old, "news", &seq, limit)
}

// cpuTime is the user + system CPU time of the process so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// TestFanoutSubscribeCost times one subscriber's subscribe, match and
// unsubscribe as its number of topics grows: each must cost O(1) (or
// O(topic length)), not O(topics), so n of them cost O(n), not O(n^2).
func TestFanoutSubscribeCost(t *testing.T) {
	var times []time.Duration
	for _, n := range []int{10_000, 40_000} {
		s := newTestFanoutSub()
		topics := make([]string, n)
		for i := range topics {
			topics[i] = fmt.Sprintf("chan/%07d", i)
		}
		start := time.Now()
		for _, tp := range topics {
			s.subscribe(tp)
		}
		for i := 0; i < n; i++ {
			if s.matches([]byte("other/topic/that/matches/nothing")) {
				t.Fatal("matched")
			}
		}
		if !s.matches([]byte(topics[n/2] + "/x")) {
			t.Fatal("prefix not matched")
		}
		for _, tp := range topics {
			s.unsubscribe(tp)
		}
		if s.matches([]byte(topics[n/2])) {
			t.Fatal("matched after unsubscribing")
		}
		d := time.Since(start)
		times = append(times, d)
		t.Logf("%d topics: %d subscribes + %d matches + %d unsubscribes in %v", n, n, n, n, d.Round(time.Microsecond))
	}
	if times[1] > 5*time.Second {
		t.Fatalf("40k subscribes, matches and unsubscribes took %v", times[1])
	}
}

func sockAddr2(f *Fanout) string { return f.Addr().String() }

func newTestFanoutSub() *fanoutSub {
	return newFanoutSub(nil, FanoutConfig{MaxTopics: 1 << 30, MaxTopicLen: 256})
}

// TestFanoutTopicCap: a subscriber's subscriptions beyond MaxTopics (or
// longer than MaxTopicLen) are ignored, logged once and counted; it keeps
// the ones it has, and unsubscribing makes room again.
func TestFanoutTopicCap(t *testing.T) {
	logs := captureGuardLog(t)
	cfg := FanoutConfig{MaxTopics: 100, MaxTopicLen: 16}
	f, err := ListenFanoutConfig(t.Context(), "tcp://127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	before := Stats().SubscriptionsIgnored
	p := zmtptest.Dial(t, sockAddr2(f))
	p.Handshake(t, 0, "SUB")
	var subs []byte
	for i := range 150 {
		subs = append(subs, zmtptest.Frame(fmt.Appendf([]byte{1}, "t/%03d", i), false, false)...)
	}
	subs = append(subs, zmtptest.Frame(append([]byte{1}, "a-topic-longer-than-16"...), false, false)...)
	subs = append(subs, zmtptest.Frame(fmt.Appendf([]byte{0}, "t/%03d", 0), false, false)...) // room for one
	subs = append(subs, zmtptest.Frame(append([]byte{1}, "later"...), false, false)...)
	p.Write(t, subs)
	waitFor(t, 5*time.Second, "the ignored subscriptions to be counted", func() bool {
		return Stats().SubscriptionsIgnored-before == 51
	})
	got := make(chan string, 10)
	go func() {
		for {
			m, err := p.ReadMessage()
			if err != nil {
				return
			}
			got <- string(m[0])
		}
	}()
	waitFor(t, 5*time.Second, "the last subscription to take effect", func() bool {
		f.Publish([][]byte{[]byte("later"), nil})
		select {
		case <-got:
			return true
		case <-time.After(20 * time.Millisecond):
			return false
		}
	})
	for _, topic := range []string{"t/099", "t/100", "t/149", "a-topic-longer-than-16", "t/000", "t/001"} {
		f.Publish([][]byte{[]byte(topic), nil})
	}
	for _, want := range []string{"t/099", "t/001"} {
		select {
		case g := <-got:
			if g != want {
				t.Fatalf("received %q, want %q (publications over the cap must not arrive)", g, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%q never arrived", want)
		}
	}
	if n := strings.Count(logs.String(), "subscriptions ignored"); n != 1 {
		t.Fatalf("logged %d times, want once:\n%s", n, logs.String())
	}
}
