package e2e

// A subscriber that stops reading (issue 3): the others still get at least
// 99% of the publications, the guard cuts the stuck one off as a slow
// consumer, and the broker's memory stays bounded while more than 100 MB of
// publications flow past stuck subscribers.

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-zeromq/zmq4"

	"chat/internal/clustertest"
	"chat/internal/testnet"
	"chat/internal/zmtptest"
	"chat/proto"
	"chat/roles/broker"
	"chat/transport"
)

const (
	slowTopic = "slow"
	warmTopic = "warm"
)

// countingSubs are zmq4 SUB sockets on pub-out that read as fast as they
// can and count the publications of slowTopic and warmTopic they get.
type countingSubs struct {
	counts, warm []atomic.Int64
	socks        []zmq4.Socket
	closing      atomic.Bool
	wg           sync.WaitGroup
}

func startCountingSubs(t *testing.T, pubOut string, n int) *countingSubs {
	t.Helper()
	cs := &countingSubs{counts: make([]atomic.Int64, n), warm: make([]atomic.Int64, n)}
	for i := range n {
		sub, err := transport.DialSocket(context.Background(), zmq4.NewSub, pubOut, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if err := sub.SetOption(zmq4.OptionSubscribe, ""); err != nil {
			t.Fatal(err)
		}
		cs.socks = append(cs.socks, sub)
		cs.wg.Go(func() {
			for {
				m, err := sub.Recv()
				if err != nil {
					if cs.closing.Load() {
						return
					}
					time.Sleep(time.Millisecond) // a publisher went away
					continue
				}
				if len(m.Frames) != 2 {
					continue
				}
				switch string(m.Frames[0]) {
				case slowTopic:
					cs.counts[i].Add(1)
				case warmTopic:
					cs.warm[i].Add(1)
				}
			}
		})
	}
	t.Cleanup(cs.close)
	return cs
}

func (cs *countingSubs) close() {
	cs.closing.Store(true)
	for _, s := range cs.socks {
		s.Close()
	}
	cs.wg.Wait()
	cs.socks = nil
}

func (cs *countingSubs) min() int64 {
	m := cs.counts[0].Load()
	for i := range cs.counts {
		m = min(m, cs.counts[i].Load())
	}
	return m
}

func (cs *countingSubs) allWarm() bool {
	for i := range cs.warm {
		if cs.warm[i].Load() == 0 {
			return false
		}
	}
	return true
}

func (cs *countingSubs) String() string {
	var parts []string
	for i := range cs.counts {
		parts = append(parts, strconv.FormatInt(cs.counts[i].Load(), 10))
	}
	return strings.Join(parts, " ")
}

// stuckSub is a raw ZMTP 3.0 SUB on pub-out, subscribed to everything,
// that reads its first whole publication and then never reads again. ZMTP
// 3.0 so that the guard never PINGs it: only slow-consumer handling can cut
// it off.
type stuckSub struct {
	p          *zmtptest.Peer
	gotOne     chan struct{} // closed when the first publication has arrived
	readerDone chan struct{}
}

func stuckSubscriber(t *testing.T, pubOut string) *stuckSub {
	t.Helper()
	s := &stuckSub{p: zmtptest.Dial(t, hostPort(pubOut)), gotOne: make(chan struct{}), readerDone: make(chan struct{})}
	s.p.Handshake(t, 0, "SUB")
	s.p.Write(t, zmtptest.Frame([]byte{1}, false, false)) // SUBSCRIBE ""
	go func() {
		defer close(s.readerDone)
		_ = s.p.Conn.SetReadDeadline(time.Now().Add(30 * time.Second))
		if _, err := s.p.ReadMessage(); err == nil {
			close(s.gotOne)
		}
		// and never read again
	}()
	return s
}

// closedWithin drains the connection and reports whether the broker closed it.
func (s *stuckSub) closedWithin(d time.Duration) bool {
	deadline := time.Now().Add(d)
	select {
	case <-s.readerDone:
	case <-time.After(d):
		return false // it never even got one publication
	}
	return s.p.ClosedWithin(max(time.Until(deadline), time.Millisecond))
}

// publication builds a two-frame publication of about size bytes.
func publication(topic string, size int) zmq4.Msg {
	p := proto.PostPublication(proto.Post{Channel: topic, User: "load", Text: strings.Repeat("x", size), Timestamp: time.Now()})
	return zmq4.NewMsgFrom(p.Frames()...)
}

// publishPaced sends n copies of msg in rounds, waiting after each round
// until the slowest healthy subscriber is at most two rounds behind, and
// never faster than maxRate messages per second. after is called after
// each round with the number sent so far.
func publishPaced(t *testing.T, pub zmq4.Socket, msg zmq4.Msg, n, round int, maxRate float64, subs *countingSubs, after func(sent int)) {
	t.Helper()
	start := time.Now()
	for sent := 0; sent < n; {
		for range min(round, n-sent) {
			if err := pub.Send(msg); err != nil {
				t.Fatalf("publish: %v", err)
			}
			sent++
		}
		if after != nil {
			after(sent)
		}
		if wait := time.Duration(float64(sent)/maxRate*float64(time.Second)) - time.Since(start); wait > 0 {
			time.Sleep(wait)
		}
		waitStart := time.Now()
		for subs.min() < int64(sent-2*round) {
			if time.Since(waitStart) > 10*time.Second {
				t.Fatalf("healthy subscribers stalled for %v: %d published in %v, they have %s",
					time.Since(waitStart).Round(time.Millisecond), sent, time.Since(start).Round(time.Millisecond), subs)
			}
			time.Sleep(time.Millisecond)
		}
	}
}

// TestSlowSubscriberDoesNotSlowOthers runs a broker with 10 subscribers on
// pub-out: 9 zmq4 SUBs reading normally and one raw peer that subscribes
// and never reads. A publisher on pub-in sends N publications: each healthy
// subscriber gets at least 99% of them, and the guard cuts the stuck one
// off as a slow consumer. The guard's MaxPending is lowered so that a few
// MB are enough (the race detector makes every byte costly here);
// TestSlowSubscriberBrokerMemoryBounded runs with the defaults.
func TestSlowSubscriberDoesNotSlowOthers(t *testing.T) {
	cfg := setGuardConfigForTest(t, func(c *transport.GuardConfig) { c.MaxPending = 2 << 20 })
	b, err := broker.Start(context.Background(), clustertest.BrokerConfig(), clustertest.Log())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	before := transport.Stats().SlowConsumers

	stuck := stuckSubscriber(t, b.PubOutAddr())
	subs := startCountingSubs(t, b.PubOutAddr(), 9)
	pub, err := transport.DialSocket(context.Background(), zmq4.NewPub, b.PubInAddr(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pub.Close() })

	warm := publication(warmTopic, 10)
	clustertest.WaitFor(t, 10*time.Second, "every subscriber, the stuck one included, to get a publication", func() bool {
		_ = pub.Send(warm)
		select {
		case <-stuck.gotOne:
			return subs.allWarm()
		default:
			return false
		}
	})

	// 16 MB: more than twice what the guard lets queue for one peer
	// (MaxPending) plus what the kernel buffers on loopback (~4 MB), and
	// healthy readers at most 2 rounds (< MaxPending) behind.
	const n, size, round = 2000, 8000, 50
	if n*size < 2*(cfg.MaxPending+4<<20) || 2*round*size >= cfg.MaxPending {
		t.Fatalf("test sizes do not fit MaxPending %d", cfg.MaxPending)
	}
	start := time.Now()
	publishPaced(t, pub, publication(slowTopic, size), n, round, 20000, subs, nil)
	clustertest.WaitFor(t, 10*time.Second, "every healthy subscriber to get >= 99%", func() bool { return subs.min() >= n*99/100 })
	took := time.Since(start)
	clustertest.WaitFor(t, 10*time.Second, "the stuck subscriber to be cut off as a slow consumer", func() bool {
		return transport.Stats().SlowConsumers > before
	})
	if !stuck.closedWithin(10 * time.Second) {
		t.Fatal("the broker never closed the stuck subscriber's connection")
	}
	t.Logf("%d publications of %d bytes in %v (%.0f/s); healthy subscribers got: %s; slow consumers cut off: %d",
		n, size, took.Round(time.Millisecond), float64(n)/took.Seconds(), subs, transport.Stats().SlowConsumers-before)
}

// TestSlowSubscriberBrokerMemoryBounded runs `chat broker` as a process and
// pushes more than 100 MB of publications through it while subscribers that
// never read are connected (a new one every 20 MB, each cut off in turn),
// sampling the broker's resident memory all along. Plain zmq4 queues
// without bound for a stuck subscriber (530 MB in 5 s).
func TestSlowSubscriberBrokerMemoryBounded(t *testing.T) {
	const (
		limit     = 200 << 20 // bytes of resident memory
		size      = 64 << 10  // bytes per publication
		total     = 120 << 20 // bytes published
		stuckEach = 20 << 20  // a new stuck subscriber every this many bytes...
		stuckTill = 60 << 20  // ...up to here, so each one has > MaxPending + kernel buffers to choke on
	)
	bin := buildChat(t)
	front, back, pubIn, pubOut := testnet.FreeEndpoint(t), testnet.FreeEndpoint(t), testnet.FreeEndpoint(t), testnet.FreeEndpoint(t)
	bp := startChatProcess(t, bin, "broker", "--front", front, "--back", back, "--pub-in", pubIn, "--pub-out", pubOut)
	rss := watchRSS(t, bp.pid(), 10*time.Millisecond)

	clustertest.WaitFor(t, 10*time.Second, "the broker to listen", func() bool {
		if err := bp.alive(); err != nil {
			t.Fatal(err)
		}
		for _, ep := range []string{pubIn, pubOut} {
			c, err := net.DialTimeout("tcp", hostPort(ep), time.Second)
			if err != nil {
				return false
			}
			c.Close()
		}
		return true
	})
	stuck := []*stuckSub{stuckSubscriber(t, pubOut)}
	subs := startCountingSubs(t, pubOut, 2)
	pub, err := transport.DialSocket(context.Background(), zmq4.NewPub, pubIn, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pub.Close() })
	warm := publication(warmTopic, 10)
	clustertest.WaitFor(t, 10*time.Second, "every subscriber to get a publication", func() bool {
		_ = pub.Send(warm)
		select {
		case <-stuck[0].gotOne:
			return subs.allWarm()
		default:
			return false
		}
	})

	n := total / size
	start := time.Now()
	// rounds of 8: healthy readers at most 1 MB behind, which they drain
	// well within the guard's timeouts even on a loaded machine
	publishPaced(t, pub, publication(slowTopic, size), n, 8, 20000, subs, func(sent int) {
		if err := bp.alive(); err != nil {
			t.Fatal(err)
		}
		if bytes := sent * size; bytes < stuckTill && bytes/stuckEach >= len(stuck) {
			stuck = append(stuck, stuckSubscriber(t, pubOut))
		}
	})
	clustertest.WaitFor(t, 10*time.Second, "every healthy subscriber to get >= 99%", func() bool { return subs.min() >= int64(n*99/100) })
	took := time.Since(start)
	cut := 0
	for i, s := range stuck {
		if s.closedWithin(10 * time.Second) {
			cut++
		} else {
			t.Errorf("stuck subscriber %d was never cut off", i)
		}
	}
	if err := bp.alive(); err != nil {
		t.Fatal(err)
	}
	maxRSS, hwm := rss.stop()
	t.Logf("%d MB in %d publications through the broker in %v; %d stuck subscribers, %d cut off; healthy subscribers got %s; broker VmRSS max sampled %.1f MiB, VmHWM %.1f MiB",
		n*size>>20, n, took.Round(time.Millisecond), len(stuck), cut, subs, float64(maxRSS)/(1<<20), float64(hwm)/(1<<20))
	if hwm > limit || maxRSS > limit {
		t.Fatalf("broker resident memory reached %.1f MiB (VmHWM; sampled max %.1f MiB), limit %d MiB",
			float64(hwm)/(1<<20), float64(maxRSS)/(1<<20), limit>>20)
	}
}

// rssWatcher samples a process's VmRSS.
type rssWatcher struct {
	pid  int
	done chan struct{}
	max  atomic.Int64
	wg   sync.WaitGroup
}

func watchRSS(t *testing.T, pid int, every time.Duration) *rssWatcher {
	t.Helper()
	w := &rssWatcher{pid: pid, done: make(chan struct{})}
	if _, err := procStatus(pid, "VmRSS"); err != nil {
		t.Fatal(err)
	}
	w.wg.Go(func() {
		tick := time.NewTicker(every)
		defer tick.Stop()
		for {
			if v, err := procStatus(pid, "VmRSS"); err == nil && v > w.max.Load() {
				w.max.Store(v)
			}
			select {
			case <-w.done:
				return
			case <-tick.C:
			}
		}
	})
	t.Cleanup(func() { w.stop() })
	return w
}

// stop ends the sampling and returns the largest VmRSS sampled and the
// kernel's high-water mark VmHWM (the true peak), in bytes.
func (w *rssWatcher) stop() (maxRSS, hwm int64) {
	select {
	case <-w.done:
	default:
		close(w.done)
	}
	w.wg.Wait()
	hwm, _ = procStatus(w.pid, "VmHWM")
	return w.max.Load(), hwm
}

// procStatus reads a "kB" field of /proc/PID/status, in bytes.
func procStatus(pid int, field string) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), field+":")
		if !ok {
			continue
		}
		kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("%s: %q: %v", field, rest, err)
		}
		return kb << 10, nil
	}
	return 0, fmt.Errorf("no %s in /proc/%d/status", field, pid)
}
