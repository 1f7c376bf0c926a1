package bench

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-zeromq/zmq4"

	"chat/internal/clustertest"
	"chat/roles/broker"
	"chat/transport"
)

const (
	fanoutSubs    = 10
	fanoutPayload = 100
	fanoutTopic   = "chan.bench"
	// fanoutWindow is how many publications the publisher may have in
	// flight ahead of the slowest subscriber: 1.1 MB per subscriber
	// connection (114 bytes each on the wire), far below the guard's
	// MaxPending (8 MiB), so nobody is cut off as a slow consumer, yet
	// ~30 ms of traffic at libzmq's rate, so the window never limits
	// throughput.
	fanoutWindow = 10000
	// fanoutBatch is the most publications the publisher writes at once.
	fanoutBatch = 64
	// fanoutRun is how long each measurement publishes.
	fanoutRun = time.Second
	// fanoutRounds: measurements are repeated, interleaved, medians reported.
	fanoutRounds = 5
)

var fanoutQuiet = log.New(io.Discard, "", 0)

// fanoutProxy is one proxy under test: publishers connect to in,
// subscribers to out (host:port).
type fanoutProxy struct {
	name    string
	in, out string
}

// BenchmarkFanout measures deliveries per second (publications received,
// summed over 10 subscribers) from one publisher through three pub/sub
// proxies, started side by side and measured in interleaved rounds:
//
//   - broker: our broker (broker.Start, in process, guarded transport);
//   - libzmq: zmq.proxy(XSUB, XPUB) of libzmq 4.3 (bench/fanout_proxy.py,
//     Debian's python3-zmq);
//   - zmq4: the same loop as the broker's, plain zmq4 on plain tcp://
//     (what zmq4 does without our transport).
//
// The publisher and subscribers are the same code for all three (see
// dialZMTP): minimal ZMTP 3.0 peers over plain TCP that batch their writes
// and reads, so that their own cost is small next to any proxy's and cannot
// cap the fastest one (zmq4 SUBs, even on our transport, cap libzmq's proxy
// at a sixth of what it does here and make the broker look faster than it). The publisher keeps at most fanoutWindow publications
// in flight ahead of the slowest subscriber; a subscriber that is cut off
// fails the benchmark.
func BenchmarkFanout(b *testing.B) {
	for b.Loop() {
		proxies := []fanoutProxy{startBrokerProxy(b)}
		if lz, ok := startLibzmqProxy(b); ok {
			proxies = append(proxies, lz)
		}
		proxies = append(proxies, startZmq4Proxy(b))
		slowBefore := transport.Stats().SlowConsumers
		rates := map[string][]float64{}
		for range fanoutRounds {
			for _, p := range proxies {
				rates[p.name] = append(rates[p.name], measureFanout(b, p))
			}
		}
		if n := transport.Stats().SlowConsumers - slowBefore; n != 0 {
			b.Fatalf("%d subscribers cut off as slow consumers", n)
		}
		med := map[string]float64{}
		for name, r := range rates {
			slices.Sort(r)
			med[name] = r[len(r)/2]
			b.ReportMetric(med[name], name+"-deliveries/s")
			b.Logf("%s: %.0f deliveries/s (rounds %.0f)", name, med[name], r)
		}
		if lz := med["libzmq"]; lz > 0 {
			b.ReportMetric(med["broker"]/lz, "broker/libzmq")
		}
		if med["zmq4"] > 0 {
			b.ReportMetric(med["broker"]/med["zmq4"], "broker/zmq4")
		}
	}
}

// startBrokerProxy starts our broker in process.
func startBrokerProxy(b *testing.B) fanoutProxy {
	b.Helper()
	brk := startFanoutBroker(b)
	return fanoutProxy{"broker", endpointHostPort(brk.PubInAddr()), endpointHostPort(brk.PubOutAddr())}
}

// startFanoutBroker starts a broker in process with the default config but
// kernel-chosen ports on 127.0.0.1; it is closed on cleanup.
func startFanoutBroker(b *testing.B) *broker.Broker {
	b.Helper()
	brk, err := broker.Start(context.Background(), clustertest.LocalBrokerConfig(), slog.New(slog.DiscardHandler))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { brk.Close() })
	return brk
}

// startZmq4Proxy starts the reference loop on plain zmq4 and plain tcp://: a
// bound SUB subscribed to everything feeding an XPUB, empty messages and
// errors skipped (zmq4's own NewProxy delivers nothing, see ZMQ4-NOTES).
func startZmq4Proxy(b *testing.B) fanoutProxy {
	b.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	in := zmq4.NewSub(ctx, zmq4.WithLogger(fanoutQuiet))
	out := zmq4.NewXPub(ctx, zmq4.WithLogger(fanoutQuiet))
	done := make(chan struct{})
	b.Cleanup(func() { cancel(); in.Close(); out.Close(); <-done })
	if err := in.Listen("tcp://127.0.0.1:0"); err != nil {
		b.Fatal(err)
	}
	if err := out.Listen("tcp://127.0.0.1:0"); err != nil {
		b.Fatal(err)
	}
	if err := in.SetOption(zmq4.OptionSubscribe, ""); err != nil {
		b.Fatal(err)
	}
	go func() {
		defer close(done)
		for {
			msg, err := in.Recv()
			if ctx.Err() != nil {
				return
			}
			if err != nil || len(msg.Frames) < 2 {
				continue
			}
			_ = out.Send(msg)
		}
	}()
	return fanoutProxy{"zmq4", in.Addr().String(), out.Addr().String()}
}

// startLibzmqProxy runs bench/fanout_proxy.py. ok is false (and the
// comparison skipped) when Debian's python3-zmq is not installed, unless
// CHAT_REQUIRE_PYTHON is set.
func startLibzmqProxy(b *testing.B) (fanoutProxy, bool) {
	b.Helper()
	const py = "/usr/bin/python3"
	if err := exec.Command(py, "-c", "import zmq").Run(); err != nil {
		if os.Getenv("CHAT_REQUIRE_PYTHON") != "" {
			b.Fatalf("%s with zmq is required (CHAT_REQUIRE_PYTHON is set): %v", py, err)
		}
		b.Logf("libzmq comparison skipped: %s cannot import zmq (install python3-zmq)", py)
		return fanoutProxy{}, false
	}
	script, err := filepath.Abs("fanout_proxy.py")
	if err != nil {
		b.Fatal(err)
	}
	cmd := exec.Command(py, script, "tcp://127.0.0.1:*", "tcp://127.0.0.1:*")
	stdin, err := cmd.StdinPipe() // closed on cleanup: the proxy exits
	if err != nil {
		b.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { stdin.Close(); cmd.Process.Kill(); cmd.Wait() })
	line, err := bufio.NewReader(stdout).ReadString('\n')
	f := strings.Fields(line)
	if err != nil || len(f) != 3 || f[0] != "READY" {
		b.Fatalf("fanout_proxy.py did not start: %q %v", line, err)
	}
	return fanoutProxy{"libzmq", endpointHostPort(f[1]), endpointHostPort(f[2])}, true
}

// endpointHostPort turns "tcp://host:port" into "host:port".
func endpointHostPort(ep string) string {
	_, hp, _ := strings.Cut(ep, "://")
	return hp
}

// measureFanout publishes through p for fanoutRun and returns deliveries
// per second, counted until the last subscriber has received everything.
func measureFanout(b *testing.B, p fanoutProxy) float64 {
	b.Helper()
	subs := make([]*rawSub, fanoutSubs)
	for i := range subs {
		s, err := dialRawSub(p.out, fanoutTopic)
		if err != nil {
			b.Fatalf("%s: %v", p.name, err)
		}
		defer s.close()
		subs[i] = s
	}
	pub, err := dialRawPub(p.in)
	if err != nil {
		b.Fatalf("%s: %v", p.name, err)
	}
	defer pub.close()
	minCount := func() int64 {
		m := subs[0].count.Load()
		for _, s := range subs[1:] {
			m = min(m, s.count.Load())
		}
		return m
	}
	failed := func() error {
		for i, s := range subs {
			if err := s.failed(); err != nil {
				return fmt.Errorf("subscriber %d: %w", i, err)
			}
		}
		return nil
	}

	// Warm up: the subscriptions travel asynchronously; publish markers
	// until every subscriber has one.
	warm := encodePub(fanoutTopic, []byte("warm"))
	deadline := time.Now().Add(10 * time.Second)
	for !allWarm(subs) {
		if time.Now().After(deadline) {
			b.Fatalf("%s: subscribers did not connect", p.name)
		}
		if err := pub.write(warm); err != nil {
			b.Fatalf("%s: %v", p.name, err)
		}
		time.Sleep(5 * time.Millisecond)
	}

	one := encodePub(fanoutTopic, make([]byte, fanoutPayload))
	batch := make([]byte, 0, fanoutBatch*len(one))
	for range fanoutBatch {
		batch = append(batch, one...)
	}
	var sent int64
	start := time.Now()
	for time.Since(start) < fanoutRun {
		n := min(int64(fanoutBatch), minCount()+fanoutWindow-sent)
		if n <= 0 {
			if err := failed(); err != nil {
				b.Fatalf("%s: %v", p.name, err)
			}
			time.Sleep(20 * time.Microsecond)
			continue
		}
		if err := pub.write(batch[:n*int64(len(one))]); err != nil {
			b.Fatalf("%s: %v", p.name, err)
		}
		sent += n
	}
	stall := time.Now().Add(10 * time.Second)
	for minCount() < sent {
		if err := failed(); err != nil {
			b.Fatalf("%s: %v", p.name, err)
		}
		if time.Now().After(stall) {
			b.Fatalf("%s: deliveries stalled at %d/%d", p.name, minCount(), sent)
		}
		time.Sleep(20 * time.Microsecond)
	}
	elapsed := time.Since(start)
	for i, s := range subs {
		if c := s.count.Load(); c != sent {
			b.Fatalf("%s: subscriber %d got %d publications, %d sent", p.name, i, c, sent)
		}
	}
	return float64(fanoutSubs) * float64(sent) / elapsed.Seconds()
}

func allWarm(subs []*rawSub) bool {
	for _, s := range subs {
		if !s.warm.Load() {
			return false
		}
	}
	return true
}

// ---- minimal ZMTP 3.0 peers (NULL security) ----
//
// The benchmark's publisher and subscribers speak ZMTP directly over TCP:
// one handshake, then big reads and writes. A zmq4 SUB costs several
// syscalls, allocations and goroutine hand-offs per message, enough on two
// cores to cap libzmq's proxy far below what it can do; these peers cost a
// few nanoseconds per message, the same for every proxy.

// zmtpGreeting: ZMTP 3.0, NULL mechanism, as-server 0.
var zmtpGreeting = func() []byte {
	g := make([]byte, 64)
	g[0], g[9], g[10], g[11] = 0xFF, 0x7F, 3, 0
	copy(g[12:], "NULL")
	return g
}()

// dialZMTP connects to addr and completes the handshake as socketType.
func dialZMTP(addr, socketType string) (net.Conn, *bufio.Reader, error) {
	c, err := net.DialTimeout("tcp", addr, 3*time.Second)
	if err != nil {
		return nil, nil, err
	}
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	body := append([]byte("\x05READY\x0bSocket-Type"), 0, 0, 0, byte(len(socketType)))
	body = append(body, socketType...)
	hello := append(slices.Clone(zmtpGreeting), 0x04, byte(len(body)))
	hello = append(hello, body...)
	if _, err := c.Write(hello); err != nil {
		c.Close()
		return nil, nil, err
	}
	br := bufio.NewReaderSize(c, 64<<10)
	g := make([]byte, 64)
	if _, err := io.ReadFull(br, g); err != nil || g[0] != 0xFF || g[9] != 0x7F || g[10] < 3 {
		c.Close()
		return nil, nil, fmt.Errorf("bad greeting from %s: %x %v", addr, g, err)
	}
	flags, size, err := readFrameHeader(br)
	if err == nil && flags&0x04 == 0 {
		err = errors.New("READY expected")
	}
	if err == nil {
		_, err = br.Discard(int(size))
	}
	if err != nil {
		c.Close()
		return nil, nil, fmt.Errorf("handshake with %s: %w", addr, err)
	}
	_ = c.SetDeadline(time.Time{})
	return c, br, nil
}

func readFrameHeader(br *bufio.Reader) (flags byte, size int64, err error) {
	var h [9]byte
	if _, err = io.ReadFull(br, h[:2]); err != nil {
		return 0, 0, err
	}
	if h[0]&0x02 == 0 {
		return h[0], int64(h[1]), nil
	}
	if _, err = io.ReadFull(br, h[2:9]); err != nil {
		return 0, 0, err
	}
	return h[0], int64(binary.BigEndian.Uint64(h[1:9])), nil
}

// encodePub encodes the two-frame publication [topic][payload] (short frames).
func encodePub(topic string, payload []byte) []byte {
	m := []byte{0x01, byte(len(topic))}
	m = append(m, topic...)
	m = append(m, 0x00, byte(len(payload)))
	return append(m, payload...)
}

type rawPub struct{ c net.Conn }

func dialRawPub(addr string) (*rawPub, error) {
	c, br, err := dialZMTP(addr, "PUB")
	if err != nil {
		return nil, err
	}
	go io.Copy(io.Discard, br) // the proxy's subscription to everything: ignored
	return &rawPub{c}, nil
}

func (p *rawPub) write(b []byte) error { _, err := p.c.Write(b); return err }
func (p *rawPub) close()               { p.c.Close() }

// rawSub counts the publications of fanoutPayload bytes it receives.
type rawSub struct {
	c     net.Conn
	count atomic.Int64
	warm  atomic.Bool // a publication of another size arrived
	err   atomic.Pointer[error]
	done  chan struct{}
}

func dialRawSub(addr, topic string) (*rawSub, error) {
	c, br, err := dialZMTP(addr, "SUB")
	if err != nil {
		return nil, err
	}
	sub := append([]byte{0x00, byte(len(topic) + 1), 0x01}, topic...) // ZMTP 3.0 subscription
	if _, err := c.Write(sub); err != nil {
		c.Close()
		return nil, err
	}
	s := &rawSub{c: c, done: make(chan struct{})}
	go s.run(br)
	return s, nil
}

func (s *rawSub) failed() error {
	if e := s.err.Load(); e != nil {
		return *e
	}
	return nil
}

func (s *rawSub) close() { s.c.Close(); <-s.done }

// run parses the frames out of big reads: a frame header may be split
// across reads (hdr, hdrN), skip is what is left of the current body.
func (s *rawSub) run(br *bufio.Reader) {
	defer close(s.done)
	var (
		hdr         [9]byte
		hdrN        int
		skip, size  int64
		count, seen int64
		buf         = make([]byte, 256<<10)
	)
	endFrame := func() {
		if hdr[0]&0x05 != 0 { // MORE or COMMAND: not the end of a publication
			return
		}
		if size == fanoutPayload {
			count++
		} else {
			s.warm.Store(true)
		}
	}
	for {
		n, err := br.Read(buf)
		if err != nil {
			if !errors.Is(err, net.ErrClosed) { // not closed by us
				err = fmt.Errorf("cut off: %w", err)
				s.err.Store(&err)
			}
			return
		}
		for p := buf[:n]; len(p) > 0; {
			if skip > 0 {
				k := min(skip, int64(len(p)))
				p, skip = p[k:], skip-k
				if skip == 0 {
					endFrame()
				}
				continue
			}
			hdr[hdrN], hdrN, p = p[0], hdrN+1, p[1:]
			switch {
			case hdr[0]&0x02 == 0 && hdrN == 2:
				size = int64(hdr[1])
			case hdrN == 9:
				size = int64(binary.BigEndian.Uint64(hdr[1:9]))
			default:
				continue
			}
			hdrN, skip = 0, size
			if size == 0 {
				endFrame()
			}
		}
		if count != seen {
			s.count.Store(count)
			seen = count
		}
	}
}

// BenchmarkFanoutLatency measures the latency the broker adds at low load:
// one zmq4 publisher and one zmq4 subscriber, both on our transport as the
// chat's servers and clients are, once through the broker and once
// directly (the publisher bound, the subscriber connected to it). The two
// paths publish alternately, each at latencyRate, so the noise of the
// machine hits both alike. Each publication carries its send time (one
// process, one monotonic clock); reported are p50 and p99 of both paths in
// µs and their differences ("added"); the goal is added p99 < 1 ms.
func BenchmarkFanoutLatency(b *testing.B) {
	for b.Loop() {
		ctx, cancel := context.WithCancel(context.Background())
		b.Cleanup(cancel)
		brk := startFanoutBroker(b)
		direct, err := transport.ListenSocket(ctx, zmq4.NewPub, "tcp://127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		t0 := time.Now()
		paths := []*latencyPath{
			newLatencyPath(b, ctx, t0, "direct", direct, transport.BoundEndpoint(direct)),
			newLatencyPath(b, ctx, t0, "broker", dialGuarded(b, ctx, zmq4.NewPub, brk.PubInAddr()), brk.PubOutAddr()),
		}
		deadline := time.Now().Add(10 * time.Second)
		for _, p := range paths {
			for p.warm.Load() == 0 { // until the subscription has arrived
				if time.Now().After(deadline) {
					b.Fatalf("%s: subscriber did not connect", p.name)
				}
				p.send(b, false)
				time.Sleep(5 * time.Millisecond)
			}
		}
		tick := time.NewTicker(time.Second / latencyRate / time.Duration(len(paths)))
		for i := range latencySamples * len(paths) {
			<-tick.C
			paths[i%len(paths)].send(b, true)
		}
		tick.Stop()
		p50, p99 := map[string]float64{}, map[string]float64{}
		for _, p := range paths {
			lat := p.wait(b, latencySamples)
			p50[p.name], p99[p.name] = percentileMicros(lat, 0.50), percentileMicros(lat, 0.99)
			b.ReportMetric(p50[p.name], p.name+"-p50-µs")
			b.ReportMetric(p99[p.name], p.name+"-p99-µs")
		}
		b.ReportMetric(p50["broker"]-p50["direct"], "added-p50-µs")
		b.ReportMetric(p99["broker"]-p99["direct"], "added-p99-µs")
	}
}

const (
	latencyRate    = 200  // publications per second on each path
	latencySamples = 1000 // publications measured on each path
)

// latencyPath is a publisher and the subscriber that receives from it.
type latencyPath struct {
	name     string
	t0       time.Time // the clock: publications carry time.Since(t0)
	pub, sub zmq4.Socket
	warm     atomic.Int64 // warm-up publications received
	lat      chan time.Duration
	done     chan struct{}
}

// newLatencyPath subscribes to pub's publications at subEP; both sockets
// are closed on cleanup.
func newLatencyPath(b *testing.B, ctx context.Context, t0 time.Time, name string, pub zmq4.Socket, subEP string) *latencyPath {
	b.Helper()
	p := &latencyPath{name: name, t0: t0, pub: pub, lat: make(chan time.Duration, latencySamples), done: make(chan struct{})}
	b.Cleanup(func() { pub.Close() })
	p.sub = dialGuarded(b, ctx, zmq4.NewSub, subEP)
	b.Cleanup(func() { p.sub.Close(); <-p.done })
	if err := p.sub.SetOption(zmq4.OptionSubscribe, fanoutTopic); err != nil {
		b.Fatal(err)
	}
	go p.run()
	return p
}

// send publishes [topic][send time, measured flag, padding].
func (p *latencyPath) send(b *testing.B, measured bool) {
	payload := make([]byte, fanoutPayload)
	if measured {
		payload[8] = 1
	}
	binary.BigEndian.PutUint64(payload, uint64(time.Since(p.t0)))
	if err := p.pub.Send(zmq4.NewMsgFrom([]byte(fanoutTopic), payload)); err != nil {
		b.Fatalf("%s: %v", p.name, err)
	}
}

// run records the latency of every measured publication received.
func (p *latencyPath) run() {
	defer close(p.done)
	for {
		msg, err := p.sub.Recv()
		now := time.Since(p.t0)
		if err != nil {
			return
		}
		if len(msg.Frames) != 2 || len(msg.Frames[1]) != fanoutPayload {
			continue
		}
		if msg.Frames[1][8] == 0 {
			p.warm.Add(1)
			continue
		}
		select {
		case p.lat <- now - time.Duration(binary.BigEndian.Uint64(msg.Frames[1])):
		default: // more than sent: impossible
		}
	}
}

// wait returns the n latencies measured.
func (p *latencyPath) wait(b *testing.B, n int) []time.Duration {
	b.Helper()
	lat := make([]time.Duration, 0, n)
	timeout := time.After(10 * time.Second)
	for len(lat) < n {
		select {
		case d := <-p.lat:
			lat = append(lat, d)
		case <-timeout:
			b.Fatalf("%s: %d of %d publications received", p.name, len(lat), n)
		}
	}
	return lat
}

// dialGuarded dials ep over our transport, as the chat's sockets do.
func dialGuarded(b *testing.B, ctx context.Context, newSocket func(context.Context, ...zmq4.Option) zmq4.Socket, ep string) zmq4.Socket {
	b.Helper()
	s, err := transport.DialSocket(ctx, newSocket, ep, 3*time.Second)
	if err != nil {
		b.Fatal(err)
	}
	return s
}

func percentileMicros(d []time.Duration, q float64) float64 {
	slices.Sort(d)
	return float64(d[int(q*float64(len(d)-1))]) / float64(time.Microsecond)
}
