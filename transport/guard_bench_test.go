package transport

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-zeromq/zmq4"
)

// BenchmarkFanout: one zmq4 XPUB listening, 10 zmq4 SUBs, 100-byte
// messages; plain tcp:// against gtcp:// in the same run. The publisher keeps
// at most fanoutWindow messages in flight (ahead of the slowest subscriber)
// in both cases, so the figure is sustained throughput with a bounded backlog
// (unpaced, zmq4's own queue grows without bound and gtcp would rightly cut
// the subscribers off as slow consumers). Reported: deliveries/s (messages
// received, summed over subscribers).
func BenchmarkFanout(b *testing.B) {
	for _, scheme := range []string{"tcp", Scheme} {
		b.Run(scheme, func(b *testing.B) { benchFanout(b, scheme, 10, 100) })
	}
}

const fanoutWindow = 20000

func benchFanout(b *testing.B, scheme string, nsubs, size int) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pub := zmq4.NewXPub(ctx, zmq4.WithLogger(quietTestLogger()))
	defer pub.Close()
	if err := pub.Listen(scheme + "://127.0.0.1:0"); err != nil {
		b.Fatal(err)
	}
	counts := make([]atomic.Int64, nsubs)
	warm := make([]atomic.Bool, nsubs)
	var wg sync.WaitGroup
	subs := make([]zmq4.Socket, nsubs)
	for i := range subs {
		sub := zmq4.NewSub(ctx, zmq4.WithLogger(quietTestLogger()))
		subs[i] = sub
		if err := sub.SetOption(zmq4.OptionSubscribe, ""); err != nil {
			b.Fatal(err)
		}
		if err := sub.Dial(scheme + "://" + sockAddr(pub)); err != nil {
			b.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				msg, err := sub.Recv()
				if err != nil {
					if ctx.Err() != nil {
						return
					}
					continue
				}
				if len(msg.Frames) == 1 && len(msg.Frames[0]) == size {
					counts[i].Add(1)
				} else {
					warm[i].Store(true)
				}
			}
		}()
	}
	defer func() {
		cancel()
		for _, s := range subs {
			_ = s.Close()
		}
		wg.Wait()
	}()
	deadline := time.Now().Add(10 * time.Second)
	for ready := false; !ready; {
		if time.Now().After(deadline) {
			b.Fatal("subscribers did not connect")
		}
		_ = pub.Send(zmq4.NewMsgString("warmup"))
		time.Sleep(5 * time.Millisecond)
		ready = true
		for i := range warm {
			ready = ready && warm[i].Load()
		}
	}

	minCount := func() int64 {
		m := counts[0].Load()
		for i := 1; i < len(counts); i++ {
			m = min(m, counts[i].Load())
		}
		return m
	}
	body := make([]byte, size)
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		for int64(i)-minCount() >= fanoutWindow {
			time.Sleep(50 * time.Microsecond)
		}
		if err := pub.Send(zmq4.NewMsg(body)); err != nil {
			b.Fatal(err)
		}
	}
	stall := time.Now().Add(30 * time.Second)
	for minCount() < int64(b.N) {
		if time.Now().After(stall) {
			b.Fatalf("deliveries stalled at %d/%d (%+v)", minCount(), b.N, Stats())
		}
		time.Sleep(100 * time.Microsecond)
	}
	elapsed := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(nsubs*b.N)/elapsed.Seconds(), "deliveries/s")
}
