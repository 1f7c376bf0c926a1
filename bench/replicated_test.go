package bench

import (
	"cmp"
	"context"
	"fmt"
	"os"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"chat/internal/clustertest"
	"chat/proto"
	"chat/roles/server"
	"chat/store"
	"chat/transport"
)

// replicatedRun is how long each measurement of BenchmarkReplicatedPublish
// publishes: every setup gets the same duration.
const replicatedRun = 2 * time.Second

// BenchmarkReplicatedPublish measures acknowledged durable publishes per
// second through the broker, 16 concurrent REQ clients, against a cluster
// of three replicating servers (a write is acknowledged once two of them
// hold it durably; the broker sends writes to the coordinator, which sends
// each entry on to the followers once its own fsync is done) and against a cluster
// of one (reference, broker, one server), measured in interleaved rounds of
// the same duration in the same run. ratio is three ÷ one.
//
// Also reported, measured in the same rounds: a bare echo server (the
// baseline of BenchmarkPublishVsEcho; every setup's rate is also given as
// a ratio to it), one server without a reference sent to directly
// ("direct") and through the broker ("broker"); the process's CPU time per
// acknowledged request of each setup (clients, broker and servers
// together, so the difference between two setups is what the extra work
// costs); the fsyncs per request of the coordinator's store and of a
// follower's, and the Appends with entries a follower took per request;
// and the requests refused with "retry" or lost, if any.
//
// Every goroutine carries a pprof label role: r3/<server> (r3/infra for
// the reference and broker), r1/... for the cluster of one, echo, direct,
// broker, and client for the load, so a CPU profile splits by role:
//
//	go test -run='^$' -bench=ReplicatedPublish -benchtime=1x -cpuprofile /tmp/repl.prof ./bench
//	go tool pprof -tags /tmp/repl.prof
//	go tool pprof -top -tagfocus=role=r3/server-3 /tmp/repl.prof
//
// CHAT_BENCH_ONLY=r3 (a comma-separated list of echo, direct, broker, r1,
// r3, and the diagnostics r1lead, r3lead, r3fol: clients sent to a server
// directly, and r3key: three servers with a cluster key, reported against
// r3 as keyed/open) measures only those setups, for a profile of one alone.
// CHAT_BENCH_CLIENTS=n runs n clients instead of 16; CHAT_BENCH_RUN=5s
// measures for 5 s instead of 2.
func BenchmarkReplicatedPublish(b *testing.B) {
	for b.Loop() {
		setLabel("echo")
		echo := startEcho(b)
		setLabel("direct")
		direct, _ := startServer(b, 0)
		setLabel("broker")
		brk, _ := startBrokered(b)
		r1 := startLabelled(b, "r1", 1)
		r3 := startLabelled(b, "r3", 3)
		setLabel("client")
		defer setLabel("")
		eps := map[string]string{"echo": echo, "direct": direct.Addr(), "broker": brk, "r1": r1.Broker.FrontAddr(), "r3": r3.Broker.FrontAddr()}
		order := []string{"echo", "direct", "broker", "r1", "r3"}
		for _, name := range order[3:] {
			callUntilOK(b, eps[name], proto.Channel, proto.Data{"channel": "bench"})
		}
		// Diagnostics, measured only when CHAT_BENCH_ONLY names them:
		// clients sent straight to a server, no broker (r3lead: the
		// coordinator of three, nothing forwarded; r3fol: a follower, all
		// forwarded; r1lead: the server of the cluster of one).
		eps["r1lead"] = r1.Servers[r1.WaitLeader(10*time.Second)].Addr()
		l3 := r3.WaitLeader(10 * time.Second)
		eps["r3lead"], eps["r3fol"] = r3.Servers[l3].Addr(), r3.Servers[(l3+1)%3].Addr()
		if only := os.Getenv("CHAT_BENCH_ONLY"); only != "" { // to profile one setup alone
			order = strings.Split(only, ",")
		}
		clusters := map[string]*clustertest.Replicated{"r1": r1, "r3": r3, "r1lead": r1, "r3lead": r3, "r3fol": r3}
		if slices.Contains(order, "r3key") { // what the cluster key costs: CHAT_BENCH_ONLY=r3,r3key
			r3key := startLabelledKeyed(b, "r3key", 3, "bench cluster key, 32 bytes long!")
			clusters["r3key"], eps["r3key"] = r3key, r3key.Broker.FrontAddr()
			callUntilOK(b, eps["r3key"], proto.Channel, proto.Data{"channel": "bench"})
		}
		stores := map[string][]*store.Store{"direct": {direct.Store()}}
		for name, c := range clusters {
			leader := c.WaitLeader(10 * time.Second)
			for i, s := range c.Servers { // the coordinator first
				if i == leader {
					stores[name] = append([]*store.Store{s.Store()}, stores[name]...)
				} else {
					stores[name] = append(stores[name], s.Store())
				}
			}
		}
		run := replicatedRun
		if d, err := time.ParseDuration(os.Getenv("CHAT_BENCH_RUN")); err == nil && d > 0 {
			run = d
		}
		all := map[string][]result{}
		for range rounds {
			for _, name := range order {
				all[name] = append(all[name], measureFor(b, eps[name], run, stores[name]...))
			}
		}
		med := map[string]result{}
		for _, name := range order {
			rs := all[name]
			slices.SortFunc(rs, func(x, y result) int { return cmp.Compare(x.rate, y.rate) })
			med[name] = rs[len(rs)/2]
			var refused, lost int64
			for _, r := range rs {
				refused, lost = refused+r.refused, lost+r.lost
			}
			b.ReportMetric(med[name].rate, name+"-req/s")
			b.ReportMetric(med[name].cpuPerReq, name+"-cpu-us/req")
			if st := med[name].stores; len(st) > 0 {
				b.ReportMetric(st[0].fsyncs, name+"-coord-fsync/req")
			}
			if st := med[name].stores; len(st) > 1 {
				b.ReportMetric(st[1].fsyncs, name+"-follower-fsync/req")
				b.ReportMetric(st[1].batches, name+"-follower-append/req")
			}
			if name != "echo" && med["echo"].rate > 0 {
				b.ReportMetric(med[name].rate/med["echo"].rate, name+"/echo")
			}
			if refused+lost > 0 {
				b.ReportMetric(float64(refused), name+"-retry")
				b.ReportMetric(float64(lost), name+"-lost")
			}
		}
		if med["r1"].rate > 0 && med["r3"].rate > 0 {
			b.ReportMetric(med["r3"].rate/med["r1"].rate, "ratio")
		}
		if med["r3"].rate > 0 && med["r3key"].rate > 0 {
			b.ReportMetric(med["r3key"].rate/med["r3"].rate, "keyed/open")
		}
		if med["r1"].rate > 0 && med["broker"].rate > 0 {
			b.ReportMetric(med["r1"].rate/med["broker"].rate, "r1/broker")
		}
		for _, name := range order {
			b.Logf("%s: rounds %v", name, all[name])
		}
	}
}

// BenchmarkReplicatedCatchUp measures how long a follower that missed
// 10,000 messages takes to serve them: it is stopped (c.Stop), 10,000
// posts are published through the broker to the two others, and the
// time runs from c.Start until its log ends where the coordinator's does
// and a history read sent to it directly returns the newest post. Two
// rounds on the same follower; "s" is the slower, the steps of it are
// reported apart: start (c.Start returns: the store opened), follow (it
// follows the coordinator), lsn (its log is whole).
func BenchmarkReplicatedCatchUp(b *testing.B) {
	const missed = 10_000
	for b.Loop() {
		c := startLabelled(b, "r3", 3)
		setLabel("client")
		defer setLabel("")
		leader := c.WaitLeader(10 * time.Second)
		f := (leader + 1) % len(c.Servers)
		front := c.Broker.FrontAddr()
		callUntilOK(b, front, proto.Channel, proto.Data{"channel": "bench"})
		var worst catchUp
		for round := range 2 {
			c.Stop(f)
			clustertest.WaitFor(b, 10*time.Second, "the broker to drop the stopped server", func() bool { return len(c.Broker.LiveServers()) == 2 })
			before := lsnOf(c, leader)
			publishN(b, front, missed-1)
			newest := fmt.Sprintf("newest of round %d", round)
			callUntilOK(b, front, proto.Publish, proto.Data{"user": "bench", "channel": "bench", "message": newest})
			lag := lsnOf(c, leader) - before
			got := timeCatchUp(b, c, f, leader, newest)
			b.Logf("round %d: %d entries missed; start %v, follow %v, lsn %v, served %v", round, lag,
				got.start.Round(time.Millisecond), got.follow.Round(time.Millisecond), got.lsn.Round(time.Millisecond), got.served.Round(time.Millisecond))
			if got.served > worst.served {
				worst = got
			}
		}
		b.ReportMetric(worst.served.Seconds(), "s")
		b.ReportMetric(worst.start.Seconds(), "start-s")
		b.ReportMetric(worst.follow.Seconds(), "follow-s")
		b.ReportMetric(worst.lsn.Seconds(), "lsn-s")
	}
}

// catchUp is how long a restarted follower took to reach each step,
// counted from the call to Start.
type catchUp struct{ start, follow, lsn, served time.Duration }

// timeCatchUp starts follower f again and times its steps until a history
// read from it returns newest.
func timeCatchUp(b *testing.B, c *clustertest.Replicated, f, leader int, newest string) catchUp {
	b.Helper()
	var got catchUp
	t0 := time.Now()
	setLabel("r3/" + c.Configs[f].Name) // its goroutines, for a profile
	s := c.Start(f)
	setLabel("client")
	got.start = time.Since(t0)
	cl, err := transport.NewClient(transport.DefaultClientConfig(s.Addr()), nil)
	if err != nil {
		b.Fatal(err)
	}
	defer cl.Close()
	history := proto.Envelope{Service: proto.History, Data: proto.Data{"channel": "bench", "limit": 1}}.Stamp(time.Now(), 1).Encode()
	deadline := t0.Add(30 * time.Second)
	for time.Now().Before(deadline) {
		st := s.Node().Status()
		if got.follow == 0 && st["role"] == "follower" && st["leader"] == c.Configs[leader].Name {
			got.follow = time.Since(t0)
		}
		if got.lsn == 0 && st["lsn"] == c.Servers[leader].Node().Status()["lsn"] {
			got.lsn = time.Since(t0)
		}
		if got.lsn > 0 {
			reply, err := cl.Do(context.Background(), history)
			if err != nil {
				b.Fatal(err)
			}
			if env, err := proto.Decode(reply); err == nil && env.Data["status"] == proto.StatusOK {
				if msgs, _ := env.Data["messages"].([]any); len(msgs) == 1 {
					if m, _ := msgs[0].(map[string]any); m["message"] == newest {
						got.served = time.Since(t0)
						return got
					}
				}
			}
		}
		time.Sleep(2 * time.Millisecond)
	}
	b.Fatalf("server %d did not serve the newest post within 30 s: %+v", f, got)
	return got
}

// lsnOf returns the last LSN of server i's log.
func lsnOf(c *clustertest.Replicated, i int) uint64 {
	lsn, _ := c.Servers[i].Store().Last()
	return lsn
}

// publishN publishes n posts through ep from 16 clients, sending again
// those refused with "retry" (none carries a request_id, so a post whose
// commit timed out may be stored twice; the caller counts entries).
func publishN(b *testing.B, ep string, n int64) {
	b.Helper()
	var next atomic.Int64
	var wg sync.WaitGroup
	for i := range clients {
		wg.Go(func() {
			c, err := transport.NewClient(transport.DefaultClientConfig(ep), nil)
			if err != nil {
				b.Error(err)
				return
			}
			defer c.Close()
			for k := next.Add(1); k <= n; k = next.Add(1) {
				frame := proto.Envelope{Service: proto.Publish, Data: proto.Data{
					"user": fmt.Sprintf("bench-%d", i), "channel": "bench", "message": fmt.Sprintf("missed message %d, of a typical length", k),
				}}.Stamp(time.Now(), 1).Encode()
				for {
					reply, err := c.Do(context.Background(), frame)
					if err != nil {
						b.Error(err)
						return
					}
					env, err := proto.Decode(reply)
					if err == nil && env.Data["status"] == proto.StatusOK {
						break
					}
					if err != nil || env.Data["retry"] != true {
						b.Errorf("publish: %v %v", env.Data, err)
						return
					}
				}
			}
		})
	}
	wg.Wait()
}

// result is one measurement of measureFor.
type result struct {
	rate      float64 // acknowledged requests per second
	acked     int64
	cpuPerReq float64 // the process's CPU time (user + system) per acknowledged request, µs
	refused   int64   // replies with "retry" (or another error)
	lost      int64   // requests without a reply
	stores    []storeWork
}

// storeWork is what one server's store did per acknowledged request.
type storeWork struct {
	fsyncs  float64 // fsyncs of the change log
	batches float64 // Apply/Append calls taken by the writer (on a follower: Appends with entries)
}

func (r result) String() string {
	s := fmt.Sprintf("%d: %.0f/s %.0fµs", r.acked, r.rate, r.cpuPerReq)
	for _, w := range r.stores {
		s += fmt.Sprintf(" [fsync %.3f changes %.3f]", w.fsyncs, w.batches)
	}
	return s
}

// measureFor runs publishes from 16 clients against ep for d and returns
// what it measured, with the work per request of stores (the coordinator
// first).
func measureFor(b *testing.B, ep string, d time.Duration, stores ...*store.Store) result {
	b.Helper()
	clients := clients
	if n, err := strconv.Atoi(os.Getenv("CHAT_BENCH_CLIENTS")); err == nil && n > 0 {
		clients = n // a diagnostic: 1 measures latency, more shows whether a setup is latency-bound
	}
	ctx := context.Background()
	var acked, refused, lost atomic.Int64
	var wg sync.WaitGroup
	conns, frames, closeAll := publishClients(b, ep, clients)
	defer closeAll()
	before := make([]store.Stats, len(stores))
	for i, st := range stores {
		before[i] = st.Stats()
	}
	cpu0 := processCPU()
	start := time.Now()
	deadline := start.Add(d)
	for i := range clients {
		wg.Go(func() {
			for time.Now().Before(deadline) {
				reply, err := conns[i].Do(ctx, frames[i])
				if err != nil {
					lost.Add(1)
					continue
				}
				if env, err := proto.Decode(reply); err == nil && (env.Data["status"] == proto.StatusOK || env.Service == "echo") {
					acked.Add(1)
				} else {
					refused.Add(1)
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	cpu := processCPU() - cpu0
	n := acked.Load()
	if n == 0 {
		b.Fatalf("%s: no request acknowledged in %v (%d refused, %d lost)", ep, d, refused.Load(), lost.Load())
	}
	r := result{rate: float64(n) / elapsed.Seconds(), acked: n, cpuPerReq: float64(cpu.Microseconds()) / float64(n), refused: refused.Load(), lost: lost.Load()}
	for i, st := range stores {
		after := st.Stats()
		r.stores = append(r.stores, storeWork{
			fsyncs:  float64(after.Commits-before[i].Commits) / float64(n),
			batches: float64(after.Changes-before[i].Changes) / float64(n),
		})
	}
	return r
}

// processCPU returns the CPU time (user and system) the process has used.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// callUntilOK sends one request to ep until it is not refused with
// "retry" (a cluster may still be settling), and fails unless it
// succeeds.
func callUntilOK(b *testing.B, ep, service string, data proto.Data) proto.Data {
	b.Helper()
	c, err := transport.NewClient(transport.DefaultClientConfig(ep), nil)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	frame := proto.Envelope{Service: service, Data: data}.Stamp(time.Now(), 1).Encode()
	deadline := time.Now().Add(10 * time.Second)
	for {
		reply, err := c.Do(context.Background(), frame)
		if err != nil {
			b.Fatal(err)
		}
		env, err := proto.Decode(reply)
		if err != nil {
			b.Fatal(err)
		}
		switch st := env.Data["status"]; {
		case st == proto.StatusOK || st == proto.StatusSuccess:
			return env.Data
		case env.Data["retry"] == true && time.Now().Before(deadline):
			time.Sleep(50 * time.Millisecond)
		default:
			b.Fatalf("%s: %v", service, env.Data)
		}
	}
}

// startLabelled starts a replicated cluster of n whose goroutines carry the
// pprof label role=<prefix>/<server name> (<prefix>/infra for the
// reference and the broker). Labels are inherited by the goroutines a
// goroutine starts, and clustertest calls tune just before it starts each
// server, in the calling goroutine.
func startLabelled(b *testing.B, prefix string, n int) *clustertest.Replicated {
	b.Helper()
	return startLabelledKeyed(b, prefix, n, "")
}

// startLabelledKeyed is startLabelled with a cluster key ("": open).
func startLabelledKeyed(b *testing.B, prefix string, n int, key string) *clustertest.Replicated {
	b.Helper()
	setLabel(prefix + "/infra")
	defer setLabel("")
	return clustertest.StartReplicatedKeyed(b, n, key, func(cfg *server.Config) { setLabel(prefix + "/" + cfg.Name) })
}

// setLabel sets the pprof label role of the calling goroutine (none for
// ""), which the goroutines it starts from now on inherit.
func setLabel(role string) {
	ctx := context.Background()
	if role != "" {
		ctx = pprof.WithLabels(ctx, pprof.Labels("role", role))
	}
	pprof.SetGoroutineLabels(ctx)
}
