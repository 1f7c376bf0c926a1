package bench

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-zeromq/zmq4"

	"chat/internal/clustertest"
	"chat/proto"
	"chat/roles/broker"
	"chat/roles/server"
	"chat/store"
	"chat/transport"
)

// clients is the number of concurrent REQ clients of every measurement.
const clients = 16

// requestsPerRun is how many publishes each measurement sends in all.
const requestsPerRun = 20000

// rounds is how many times each measurement is repeated, interleaved, so
// that the noise of a shared machine hits all of them alike; medians are
// reported.
const rounds = 3

// BenchmarkPublishVsEcho measures acknowledged durable publishes per
// second with 16 concurrent REQ clients: against a bare echo server on the
// same transport (the baseline), directly to one server, through the
// broker, and directly to a server that already stores 100,000 messages.
// Each rate is also reported as a ratio to the baseline measured in the
// same run.
func BenchmarkPublishVsEcho(b *testing.B) {
	for b.Loop() {
		echo := startEcho(b)
		direct, _ := startServer(b, 0)
		brk, _ := startBrokered(b)
		full, _ := startServer(b, 100_000)
		rates := map[string][]float64{}
		for range rounds {
			rates["echo"] = append(rates["echo"], measure(b, echo))
			rates["direct"] = append(rates["direct"], measure(b, direct.Addr()))
			rates["broker"] = append(rates["broker"], measure(b, brk))
			rates["direct100k"] = append(rates["direct100k"], measure(b, full.Addr()))
		}
		med := map[string]float64{}
		for name, r := range rates {
			slices.Sort(r)
			med[name] = r[len(r)/2]
			b.ReportMetric(med[name], name+"-req/s")
		}
		b.ReportMetric(med["direct"]/med["echo"], "direct/echo")
		b.ReportMetric(med["broker"]/med["echo"], "broker/echo")
		b.ReportMetric(med["direct100k"]/med["direct"], "direct100k/direct")
	}
}

// measure runs requestsPerRun publishes from 16 clients against ep and
// returns acknowledged requests per second.
func measure(b *testing.B, ep string) float64 {
	b.Helper()
	ctx := context.Background()
	var next, acked atomic.Int64
	var wg sync.WaitGroup
	conns, frames, closeAll := publishClients(b, ep, clients)
	defer closeAll()
	start := time.Now()
	for i := range clients {
		wg.Go(func() {
			for next.Add(1) <= requestsPerRun {
				reply, err := conns[i].Do(ctx, frames[i])
				if err != nil {
					b.Error(err)
					return
				}
				if env, err := proto.Decode(reply); err == nil && (env.Data["status"] == proto.StatusOK || env.Service == "echo") {
					acked.Add(1)
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	if acked.Load() != requestsPerRun {
		b.Fatalf("%d of %d requests acknowledged", acked.Load(), requestsPerRun)
	}
	return float64(requestsPerRun) / elapsed.Seconds()
}

// publishClients connects n request clients to ep, each with its own
// publish frame, and warms each up with one request. closeAll closes them.
func publishClients(b *testing.B, ep string, n int) (conns []*transport.Client, frames [][]byte, closeAll func()) {
	b.Helper()
	closeAll = func() {
		for _, c := range conns {
			c.Close()
		}
	}
	for i := range n {
		c, err := transport.NewClient(transport.DefaultClientConfig(ep), nil)
		if err != nil {
			closeAll()
			b.Fatal(err)
		}
		conns = append(conns, c)
		frames = append(frames, proto.Envelope{Service: proto.Publish, Data: proto.Data{
			"user": fmt.Sprintf("bench-%d", i), "channel": "bench", "message": "a message of a typical length, some sixty bytes long",
		}}.Stamp(time.Now(), 1).Encode())
		if _, err := c.Do(context.Background(), frames[i]); err != nil { // connect and warm up
			closeAll()
			b.Fatal(err)
		}
	}
	return conns, frames, closeAll
}

// startEcho starts the baseline: a ROUTER on the same transport whose one
// reader hands each request to a pool of workers that send it straight
// back (as "echo" replies), the same shape as the server without the work.
func startEcho(b *testing.B) string {
	b.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	sock, err := transport.ListenSocket(ctx, zmq4.NewRouter, "tcp://127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	reply := proto.Envelope{Service: "echo", Data: proto.Data{}}.Encode()
	jobs := make(chan transport.Routed, 64)
	var wg sync.WaitGroup
	for range 64 {
		wg.Go(func() {
			for r := range jobs {
				sock.Send(r.Reply(reply))
			}
		})
	}
	wg.Go(func() {
		defer close(jobs)
		for {
			m, err := sock.Recv()
			if ctx.Err() != nil {
				return
			}
			if r, err2 := transport.SplitRoute(m.Frames); err == nil && err2 == nil {
				jobs <- r
			}
		}
	})
	b.Cleanup(func() { cancel(); sock.Close(); wg.Wait() })
	return transport.BoundEndpoint(sock)
}

// startServer starts a server alone, its store preloaded with n messages
// and holding the channel "bench".
func startServer(b *testing.B, preload int) (*server.Server, string) {
	b.Helper()
	cfg := server.DefaultConfig("bench")
	cfg.Listen = "tcp://127.0.0.1:0"
	cfg.BrokerBack, cfg.BrokerPub = "", ""
	cfg.DataDir = b.TempDir()
	fill(b, filepath.Join(cfg.DataDir, "bench.db"), preload)
	s, err := server.Start(context.Background(), cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	return s, cfg.DataDir
}

// startBrokered starts a broker and one server behind it and returns the
// broker's front endpoint.
func startBrokered(b *testing.B) (string, *broker.Broker) {
	b.Helper()
	brk, err := broker.Start(context.Background(), clustertest.LocalBrokerConfig(), slog.New(slog.DiscardHandler))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { brk.Close() })
	cfg := server.DefaultConfig("bench")
	cfg.Listen = "tcp://127.0.0.1:0"
	cfg.BrokerBack, cfg.BrokerPub = brk.BackAddr(), brk.PubInAddr()
	cfg.DataDir = b.TempDir()
	fill(b, filepath.Join(cfg.DataDir, "bench.db"), 0)
	s, err := server.Start(context.Background(), cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	for len(brk.LiveServers()) == 0 {
		time.Sleep(10 * time.Millisecond)
	}
	return brk.FrontAddr(), brk
}

// fill creates the store at path with the channel "bench" and n posts.
func fill(b *testing.B, path string, n int) {
	b.Helper()
	st, err := store.Open(store.DefaultConfig(path))
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	ctx := context.Background()
	if _, err := st.Apply(ctx, store.Change{Channel: &store.Channel{Name: "bench"}}); err != nil {
		b.Fatal(err)
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	for range 64 {
		wg.Go(func() {
			for i := next.Add(1); i <= int64(n); i = next.Add(1) {
				m := &store.Message{Kind: store.Post, Channel: "bench", From: "filler", Text: fmt.Sprintf("stored message %d", i)}
				if _, err := st.Apply(ctx, store.Change{Message: m}); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
}
