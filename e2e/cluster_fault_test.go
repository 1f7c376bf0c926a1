package e2e

// Fault tests of the cluster with real processes: a reference, a broker
// and three servers of the built binary (procs_test.go), killed with
// SIGKILL, stopped with SIGTERM and restarted on their data.

import (
	"fmt"
	"math/rand/v2"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"chat/proto"
)

// The longest failover or takeover the tests accept.
const maxFailover = 3 * time.Second

// TestClusterKillCoordinator kills the coordinator (server-3, the highest
// rank) with SIGKILL five times: each time server-2 must lead within 3 s,
// and server-3, started again, must take over within 3 s; everything
// acknowledged before each kill is then read from every server.
func TestClusterKillCoordinator(t *testing.T) {
	if testing.Short() {
		t.Skip("runs real processes for seconds")
	}
	c := startProcCluster(t, nil)
	b := c.brokerClient()
	mustWrite(t, b, proto.Login, proto.Data{"user": "ana", "request_id": newRequestID()})
	mustWrite(t, b, proto.Channel, proto.Data{"channel": "failover", "request_id": newRequestID()})
	w := newExpectedWrites()
	w.users, w.channels = []string{"ana"}, []string{"failover"}
	publish := func(text string) {
		mustWrite(t, b, proto.Publish, proto.Data{"user": "ana", "channel": "failover", "message": text, "request_id": newRequestID()})
		w.acked[text] = "failover"
	}
	var failovers, takeovers []time.Duration
	for run := range 5 {
		for j := range 10 {
			publish(fmt.Sprintf("run%d-before-%d", run, j))
		}
		killed := time.Now()
		c.kill9(2)
		c.waitLeader([]int{0, 1}, 1, 10*time.Second)
		failover := time.Since(killed)
		failovers = append(failovers, failover)
		if failover > maxFailover {
			t.Errorf("run %d: server-2 led %v after server-3 was killed; at most %v expected", run, failover, maxFailover)
		}
		for j := range 5 {
			publish(fmt.Sprintf("run%d-during-%d", run, j))
		}

		started := time.Now()
		c.start(2)
		c.waitLeader([]int{0, 1, 2}, 2, 10*time.Second)
		takeover := time.Since(started)
		takeovers = append(takeovers, takeover)
		if takeover > maxFailover {
			t.Errorf("run %d: server-3 led again %v after it started; at most %v expected", run, takeover, maxFailover)
		}
		// Everything acknowledged so far, from every server.
		c.checkEverywhere(w)
	}
	t.Logf("failover median %v over 5 runs: %v", median(failovers).Round(time.Millisecond), roundAll(failovers))
	t.Logf("takeover median %v over 5 runs: %v", median(takeovers).Round(time.Millisecond), roundAll(takeovers))
	c.waitConverged(10 * time.Second)

	// chat status shows the same: server-3 coordinates, all three follow.
	out, err := exec.Command(c.bin, "status", "--reference", c.refEP).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "coordinator: server-3 (followed by 3 of the 3 answering)") {
		t.Errorf("chat status (%v) does not show server-3 coordinating all three:\n%s", err, out)
	}
}

// chaosWriter publishes through the broker as one user, and records the
// fate of every write.
type chaosWriter struct {
	id    int
	stats *writeStats
	mu    *sync.Mutex
	w     *expectedWrites
	fail  func(format string, args ...any)
}

// run logs in, creates a channel every 40 posts and posts to it and to
// the shared channel until stop is closed.
func (cw *chaosWriter) run(c *procCluster, stop <-chan struct{}) {
	cl := c.brokerClient()
	user := fmt.Sprintf("chaos-%d", cw.id)
	// A write gets 20 s to be acknowledged; one still unanswered when the
	// test stops the writers gets 10 s more at most.
	write := func(service string, data proto.Data) bool {
		data["request_id"] = newRequestID()
		deadline := time.Now().Add(20 * time.Second)
		d, err := sendUntilFinal(cl, service, data, deadline, cw.stats)
		if err != nil {
			cw.fail("writer %d: %s %v: %v", cw.id, service, data, err)
			return false
		}
		if !acked(d) {
			cw.fail("writer %d: %s %v refused for good: %v", cw.id, service, data, d)
			return false
		}
		return true
	}
	if !write(proto.Login, proto.Data{"user": user}) {
		return
	}
	cw.mu.Lock()
	cw.w.users = append(cw.w.users, user)
	cw.mu.Unlock()
	var own string
	for i := 0; ; i++ {
		select {
		case <-stop:
			return
		default:
		}
		if i%40 == 0 {
			ch := fmt.Sprintf("chaos-%d-%d", cw.id, i/40)
			if !write(proto.Channel, proto.Data{"channel": ch}) {
				return
			}
			own = ch
			cw.mu.Lock()
			cw.w.channels = append(cw.w.channels, ch)
			cw.mu.Unlock()
		}
		ch := own
		if i%2 == 1 {
			ch = "chaos"
		}
		text := fmt.Sprintf("w%d-%d", cw.id, i)
		cw.mu.Lock()
		cw.w.unknown[text] = ch
		cw.mu.Unlock()
		ok := write(proto.Publish, proto.Data{"user": user, "channel": ch, "message": text})
		cw.mu.Lock()
		if ok {
			delete(cw.w.unknown, text)
			cw.w.acked[text] = ch
		}
		cw.mu.Unlock()
		if !ok {
			return
		}
	}
}

// TestClusterChaos writes through the broker from four writers while the
// servers are killed with SIGKILL and started again one after the other
// (never two down at once) for about 20 s; then, with everything up and
// quiet, every acknowledged message must be on every server exactly
// once, in the same order with the same ids, and no acknowledged user or
// channel may be missing.
func TestClusterChaos(t *testing.T) {
	if testing.Short() {
		t.Skip("runs real processes for seconds")
	}
	c := startProcCluster(t, nil)
	b := c.brokerClient()
	mustWrite(t, b, proto.Channel, proto.Data{"channel": "chaos", "request_id": newRequestID()})
	w := newExpectedWrites()
	w.channels = []string{"chaos"}

	var mu sync.Mutex
	var stats writeStats
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for id := range 4 {
		cw := &chaosWriter{id: id, stats: &stats, mu: &mu, w: w, fail: t.Errorf}
		wg.Go(func() { cw.run(c, stop) })
	}
	ackedNow := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(w.acked)
	}
	c.waitFor(10*time.Second, "the writers to get going", func() bool { return ackedNow() >= 20 })

	rng := rand.New(rand.NewPCG(1, uint64(time.Now().UnixNano())))
	kills := 0
	var downtimes []time.Duration
	began := time.Now()
	for time.Since(began) < 20*time.Second && !t.Failed() {
		victim := kills % 3
		others := slices.DeleteFunc([]int{0, 1, 2}, func(i int) bool { return i == victim })
		before := ackedNow()
		c.kill9(victim)
		kills++
		down := time.Now()
		c.waitLeader(others, -1, 10*time.Second)
		// The two left must go on acknowledging writes.
		c.waitFor(10*time.Second, "writes to be acknowledged with "+c.servers[victim].name+" down", func() bool {
			return ackedNow() >= before+10
		})
		time.Sleep(time.Duration(rng.IntN(500)) * time.Millisecond) // down a little longer, at random
		c.start(victim)
		// Up again: it answers, leads or follows, and has caught up with
		// what was committed when it came back, before the next kill.
		_, sts := c.leaderAmong(others)
		var target int64
		for _, st := range sts {
			target = max(target, statusInt(st, "commit"))
		}
		c.waitLeader([]int{0, 1, 2}, -1, 10*time.Second)
		c.waitFor(10*time.Second, c.servers[victim].name+" to catch up", func() bool {
			st, err := c.status(victim)
			return err == nil && statusInt(st, "lsn") >= target
		})
		downtimes = append(downtimes, time.Since(down))
	}
	close(stop)
	wg.Wait()
	c.waitLeader([]int{0, 1, 2}, 2, 10*time.Second)
	sts := c.waitConverged(15 * time.Second)
	unknownStored := c.checkEverywhere(w)
	t.Logf("chaos: %d kills in %v (down and back %v); %d messages acknowledged, %d retries (%d without a reply), %d unanswered of which %d stored; %d users, %d channels; final lsn %d",
		kills, time.Since(began).Round(time.Millisecond), roundAll(downtimes), len(w.acked), stats.retries.Load(), stats.noReply.Load(),
		len(w.unknown), unknownStored, len(w.users), len(w.channels), statusInt(sts[2], "lsn"))
	if kills < 3 {
		t.Errorf("only %d kills in 20 s", kills)
	}
}

// TestClusterCatchUpFast kills a follower, writes 10,000 messages through
// the broker from many writers, starts the follower again and measures
// how long it takes to hold and serve them all (the goal is 2 s; more
// than 10 s fails).
func TestClusterCatchUpFast(t *testing.T) {
	if testing.Short() {
		t.Skip("runs real processes for seconds")
	}
	const total, writers = 10000, 32
	c := startProcCluster(t, nil)
	b := c.brokerClient()
	mustWrite(t, b, proto.Login, proto.Data{"user": "loader", "request_id": newRequestID()})
	mustWrite(t, b, proto.Channel, proto.Data{"channel": "bulk", "request_id": newRequestID()})
	c.waitConverged(10 * time.Second)
	c.kill9(0)

	var stats writeStats
	var wg sync.WaitGroup
	var mu sync.Mutex
	ackedCount := 0
	began := time.Now()
	for wr := range writers {
		wg.Go(func() {
			cl := c.brokerClient()
			for i := wr; i < total; i += writers {
				data := proto.Data{"user": "loader", "channel": "bulk", "message": fmt.Sprint("bulk-", i), "request_id": newRequestID()}
				d, err := sendUntilFinal(cl, proto.Publish, data, time.Now().Add(20*time.Second), &stats)
				if err != nil || !acked(d) {
					t.Errorf("publish %d: %v %v", i, d, err)
					return
				}
				mu.Lock()
				ackedCount++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	writing := time.Since(began)
	_, sts := c.leaderAmong([]int{1, 2})
	target := statusInt(sts[2], "lsn")
	t.Logf("%d messages written with server-1 down in %v (%.0f/s, %d retries); the coordinator's log ends at %d",
		ackedCount, writing.Round(time.Millisecond), float64(ackedCount)/writing.Seconds(), stats.retries.Load(), target)

	started := time.Now()
	c.start(0)
	var lsnAt time.Duration
	c.waitFor(30*time.Second, "server-1 to catch up", func() bool {
		st, err := c.status(0)
		if err != nil || statusInt(st, "lsn") < target {
			return false
		}
		lsnAt = time.Since(started)
		return true
	})
	msgs, err := readChannel(c.directClient(0), "bulk")
	if err != nil {
		t.Fatal(err)
	}
	served := time.Since(started)
	if len(msgs) != total {
		t.Fatalf("server-1 serves %d messages of bulk after catching up, want %d", len(msgs), total)
	}
	t.Logf("catch-up: server-1 reaches the coordinator's lsn %d %v after it started, and served all %d messages %v after",
		target, lsnAt.Round(time.Millisecond), total, served.Round(time.Millisecond))
	if lsnAt > 10*time.Second {
		t.Errorf("server-1 took %v to catch up (goal 2 s, limit 10 s)", lsnAt)
	}
}

// TestClusterRestartKeepsClockAndData stops all three servers with
// SIGTERM and starts them again on the same data: users, channels and
// messages are all there with the same ids, a coordinator is elected
// again with a newer epoch, and the servers' Lamport clocks do not go
// back: a message posted after the restart has a later clock than every
// one posted before. Then the same after a power cut: all three killed
// with SIGKILL at once.
func TestClusterRestartKeepsClockAndData(t *testing.T) {
	if testing.Short() {
		t.Skip("runs real processes for seconds")
	}
	c := startProcCluster(t, nil)
	b := c.brokerClient()
	w := newExpectedWrites()
	for _, u := range []string{"ana", "bia", "caio"} {
		mustWrite(t, b, proto.Login, proto.Data{"user": u, "request_id": newRequestID()})
		w.users = append(w.users, u)
	}
	for _, ch := range []string{"geral", "lab", "off"} {
		mustWrite(t, b, proto.Channel, proto.Data{"channel": ch, "request_id": newRequestID()})
		w.channels = append(w.channels, ch)
	}
	for i := range 60 {
		ch, u := w.channels[i%3], w.users[i%3]
		text := fmt.Sprint("before-restart-", i)
		mustWrite(t, b, proto.Publish, proto.Data{"user": u, "channel": ch, "message": text, "request_id": newRequestID()})
		w.acked[text] = ch
	}
	before := c.waitConverged(10 * time.Second)
	maxClock, maxID := historyClocks(t, c, w.channels)

	for i := range 3 {
		c.stop(i)
	}
	for i := range 3 {
		c.start(i)
	}
	started := time.Now()
	c.waitLeader([]int{0, 1, 2}, 2, 15*time.Second)
	elected := time.Since(started)
	after := c.waitConverged(10 * time.Second)
	if e0, e1 := statusInt(before[2], "epoch"), statusInt(after[2], "epoch"); e1 <= e0 {
		t.Errorf("epoch %d after the restart, %d before: it must grow", e1, e0)
	}
	c.checkEverywhere(w)

	// A fresh client: its Lamport clock (and the one in its request) is
	// low; the server's must still be past everything it stored.
	fresh := c.brokerClient()
	mustWrite(t, fresh, proto.Publish, proto.Data{"user": "ana", "channel": "geral", "message": "after-restart", "request_id": newRequestID()})
	msgs, err := readChannel(c.directClient(0), "geral")
	if err != nil {
		t.Fatal(err)
	}
	last := msgs[len(msgs)-1]
	clocks := historyClockOf(t, c, "geral", last.ID)
	t.Logf("restart: server-3 leads %v after the three started (epoch %d → %d); before it, messages up to id %d clock %d; the first after it: id %d clock %d",
		elected.Round(time.Millisecond), statusInt(before[2], "epoch"), statusInt(after[2], "epoch"), maxID, maxClock, last.ID, clocks)
	if last.Text != "after-restart" || last.ID <= maxID {
		t.Errorf("the message posted after the restart is %+v; want a new id past %d", last, maxID)
	}
	if clocks <= maxClock {
		t.Errorf("Lamport clock went back across the restart: a message posted after it has clock %d, one posted before it %d", clocks, maxClock)
	}
	w.acked["after-restart"] = "geral"

	// Then a power cut: the three killed with SIGKILL at once, mid-writes.
	for i := range 30 {
		ch, u := w.channels[i%3], w.users[i%3]
		text := fmt.Sprint("before-power-cut-", i)
		mustWrite(t, b, proto.Publish, proto.Data{"user": u, "channel": ch, "message": text, "request_id": newRequestID()})
		w.acked[text] = ch
	}
	c.waitConverged(10 * time.Second)
	maxClock, maxID = historyClocks(t, c, w.channels)
	var killers sync.WaitGroup
	for i := range 3 {
		killers.Go(func() { c.servers[i].proc.signal(syscall.SIGKILL, 10*time.Second) })
	}
	killers.Wait()
	for i := range 3 {
		c.start(i)
	}
	started = time.Now()
	c.waitLeader([]int{0, 1, 2}, 2, 15*time.Second)
	t.Logf("power cut: server-3 leads %v after the three started", time.Since(started).Round(time.Millisecond))
	c.waitConverged(10 * time.Second)
	c.checkEverywhere(w)
	mustWrite(t, c.brokerClient(), proto.Publish, proto.Data{"user": "bia", "channel": "lab", "message": "after-power-cut", "request_id": newRequestID()})
	msgs, err = readChannel(c.directClient(1), "lab")
	if err != nil {
		t.Fatal(err)
	}
	last = msgs[len(msgs)-1]
	if clk := historyClockOf(t, c, "lab", last.ID); last.Text != "after-power-cut" || last.ID <= maxID || clk <= maxClock {
		t.Errorf("after the power cut, the new message is %+v with clock %d; want an id past %d and a clock past %d", last, clk, maxID, maxClock)
	}
}

// historyClocks returns the largest Lamport clock and id of the messages
// of the channels, as server-1 serves them.
func historyClocks(t *testing.T, c *procCluster, channels []string) (maxClock uint64, maxID int64) {
	t.Helper()
	cl := c.directClient(0)
	for _, ch := range channels {
		d, err := readOK(cl, proto.History, proto.Data{"channel": ch, "limit": 500})
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range messages(t, d) {
			md := proto.Data(m)
			maxClock = max(maxClock, md.Clock())
			id, _, _ := md.Int("", "id")
			maxID = max(maxID, id)
		}
	}
	return maxClock, maxID
}

// historyClockOf returns the Lamport clock of message id of a channel.
func historyClockOf(t *testing.T, c *procCluster, channel string, id int64) uint64 {
	t.Helper()
	d, err := readOK(c.directClient(0), proto.History, proto.Data{"channel": channel, "limit": 1, "before": id + 1})
	if err != nil {
		t.Fatal(err)
	}
	msgs := messages(t, d)
	if len(msgs) != 1 {
		t.Fatalf("message %d of %s not found: %v", id, channel, d)
	}
	return proto.Data(msgs[0]).Clock()
}

// TestClusterKillReference kills -9 the reference: elections, clock sync
// and serving go on with the last peer list; restarted on its data, its
// list is whole again within a few seconds.
func TestClusterKillReference(t *testing.T) {
	if testing.Short() {
		t.Skip("runs real processes for seconds")
	}
	c := startProcCluster(t, nil)
	b := c.brokerClient()
	mustWrite(t, b, proto.Login, proto.Data{"user": "ana", "request_id": newRequestID()})
	c.ref.kill9()

	// Serving goes on.
	mustWrite(t, b, proto.Channel, proto.Data{"channel": "noref", "request_id": newRequestID()})
	// So does electing: the coordinator dies, the next takes over.
	c.kill9(2)
	c.waitLeader([]int{0, 1}, 1, 5*time.Second)
	mustWrite(t, b, proto.Publish, proto.Data{"user": "ana", "channel": "noref", "message": "while the reference is down", "request_id": newRequestID()})
	c.start(2)
	c.waitLeader([]int{0, 1, 2}, 2, 5*time.Second)
	// And clock sync: the coordinator still runs Berkeley rounds.
	c.waitFor(10*time.Second, "a Berkeley round without the reference", func() bool {
		return strings.Contains(c.servers[2].proc.logTail(200), "Berkeley round")
	})

	restarted := time.Now()
	c.ref.start()
	ref := c.client(c.refEP, time.Second)
	c.waitFor(10*time.Second, "the reference's list to be whole again", func() bool {
		d, err := readOK(ref, "list", proto.Data{})
		if err != nil {
			return false
		}
		l, _ := d["list"].([]any)
		return len(l) == 3
	})
	t.Logf("the restarted reference lists all three servers %v after it started", time.Since(restarted).Round(time.Millisecond))
	msgs, err := readChannel(b, "noref")
	if err != nil || len(msgs) != 1 {
		t.Fatalf("history of #noref: %v, %v", msgs, err)
	}
}
