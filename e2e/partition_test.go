package e2e

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"chat/internal/poll"
	"chat/proto"
	"chat/transport"
)

// TestClusterPartition makes real network partitions (network namespaces
// and nftables, netlab_test.go). A server is cut off from the other two,
// from the broker and from the reference; only a client on its side —
// the test, talking to it directly — still reaches it. Writes go on on
// both sides: the majority side keeps acknowledging them (through the
// broker and directly), the cut-off server acknowledges none (it cannot
// reach a majority: a retryable erro, or no answer). After healing, one
// coordinator leads all three within a few seconds, and every
// acknowledged write is on every server once, in one order.
//
// First the coordinator (server-3) is cut off: the majority elects
// server-2, and server-3 takes over again after healing. Then a follower
// (server-1) is cut off: server-3 must go on leading the majority, and
// keep leading when server-1 comes back.
func TestClusterPartition(t *testing.T) {
	if testing.Short() {
		t.Skip("runs real processes for seconds")
	}
	lab := newNetLab(t, 3)
	c := startProcCluster(t, lab)
	b := c.brokerClient()
	w := newExpectedWrites()
	for _, u := range []string{"maj", "min"} {
		mustWrite(t, b, proto.Login, proto.Data{"user": u, "request_id": newRequestID()})
		w.users = append(w.users, u)
	}
	mustWrite(t, b, proto.Channel, proto.Data{"channel": "part", "request_id": newRequestID()})
	w.channels = append(w.channels, "part")
	for i := range 10 {
		text := fmt.Sprint("before-", i)
		mustWrite(t, b, proto.Publish, proto.Data{"user": "maj", "channel": "part", "message": text, "request_id": newRequestID()})
		w.acked[text] = "part"
	}
	c.waitConverged(10 * time.Second)
	var hostPorts []string
	for _, ep := range []string{c.refEP, c.front, c.back, c.pubIn, c.pubOut} {
		hostPorts = append(hostPorts, endpointPort(t, ep))
	}

	// Phase 1: the coordinator is cut off.
	cutAt := time.Now()
	lab.cut(2, hostPorts)
	c.waitLeader([]int{0, 1}, 1, 10*time.Second)
	t.Logf("coordinator cut off: server-2 leads server-1 %v after server-3 was cut off", time.Since(cutAt).Round(time.Millisecond))
	p := startPartitionWriters(t, c, w, "p1", []int{0}, 2)
	p.waitAcked(t, c, 50)
	c.waitFor(5*time.Second, "a few answers from the cut-off side", func() bool { return p.minorityAnswered() >= 2 })
	p.checkRead(t, c)
	p.stopMinority()
	p.stopMajority()
	healAt := time.Now()
	lab.heal(2)
	leader := c.waitLeader([]int{0, 1, 2}, -1, 10*time.Second)
	healed := time.Since(healAt)
	t.Logf("coordinator cut off: after healing, %s leads all three within %v", c.servers[leader].name, healed.Round(time.Millisecond))
	if healed > maxFailover {
		t.Errorf("one coordinator led all three only %v after healing; at most %v expected", healed, maxFailover)
	}
	c.waitLeader([]int{0, 1, 2}, 2, 10*time.Second) // the highest rank takes over in the end
	c.waitConverged(10 * time.Second)
	p.report(t, c.checkEverywhere(w))

	// Phase 2: a follower is cut off.
	_, sts := c.leaderAmong([]int{0, 1, 2})
	epoch := statusInt(sts[2], "epoch")
	lab.cut(0, hostPorts)
	p = startPartitionWriters(t, c, w, "p2", []int{1, 2}, 0)
	p.waitAcked(t, c, 50)
	c.waitFor(10*time.Second, "a few answers from the cut-off side", func() bool { return p.minorityAnswered() >= 2 })
	p.checkRead(t, c)
	if l, sts := c.leaderAmong([]int{1, 2}); l != 2 || statusInt(sts[2], "epoch") != epoch {
		t.Errorf("with server-1 cut off, the majority side is no longer led by server-3 in epoch %d:\n%s", epoch, c.describe(sts))
	}
	// The majority's writers go on while the partition heals: how long
	// the returning server-1 disturbs them is measured.
	p.stopMinority()
	healAt = time.Now()
	lab.heal(0)
	c.waitLeader([]int{0, 1, 2}, 2, 10*time.Second)
	healed = time.Since(healAt)
	c.waitFor(10*time.Second, "200 more writes of the majority after healing", func() bool {
		n, _ := p.writesSince(healAt.Add(healed))
		return n >= 200
	})
	p.stopMajority()
	_, slowest := p.writesSince(healAt)
	sts = c.waitConverged(10 * time.Second)
	t.Logf("follower cut off: after healing, server-3 leads all three within %v; epoch %d → %d; the slowest majority write under way while healing took %v",
		healed.Round(time.Millisecond), epoch, statusInt(sts[2], "epoch"), slowest.Round(time.Millisecond))
	if healed > maxFailover {
		t.Errorf("one coordinator led all three only %v after healing; at most %v expected", healed, maxFailover)
	}
	if e := statusInt(sts[2], "epoch"); e != epoch {
		t.Logf("note: server-1 coming back from its partition deposed server-3 for a while (epoch %d → %d)", epoch, e)
	}
	p.report(t, c.checkEverywhere(w))
}

// partitionWriters write on both sides of a partition: two writers on the
// majority side (through the broker and directly to a server of it), two
// directly to the cut-off server.
type partitionWriters struct {
	name     string
	cutoff   int
	w        *expectedWrites
	mu       *sync.Mutex
	base     int               // acknowledged before the partition
	minority map[string]string // text sent to the cut-off server → outcome
	major    []string          // texts the majority acknowledged during the partition
	stats    writeStats
	quitMin  chan struct{} // stops the writers to the cut-off server
	quitMaj  chan struct{} // stops the majority's writers
	wgMin    sync.WaitGroup
	wgMaj    sync.WaitGroup
	writes   []timedWrite // the majority's acknowledged writes
}

// timedWrite is when a write was sent and how long it took to be
// acknowledged.
type timedWrite struct {
	sent time.Time
	took time.Duration
}

func startPartitionWriters(t *testing.T, c *procCluster, w *expectedWrites, name string, majority []int, cutoff int) *partitionWriters {
	p := &partitionWriters{name: name, cutoff: cutoff, w: w, mu: &sync.Mutex{}, base: len(w.acked), minority: map[string]string{},
		quitMin: make(chan struct{}), quitMaj: make(chan struct{})}
	clients := []*transport.Client{c.brokerClient()}
	vias := []string{"broker"}
	for _, i := range majority {
		clients, vias = append(clients, c.directClient(i)), append(vias, c.servers[i].name)
	}
	for k, cl := range clients {
		p.wgMaj.Go(func() {
			for i := 0; !poll.Closed(p.quitMaj); i++ {
				text := fmt.Sprintf("%s-majority-%d-%d", name, k, i)
				data := proto.Data{"user": "maj", "channel": "part", "message": text, "request_id": newRequestID()}
				sent := time.Now()
				d, err := sendUntilFinal(cl, proto.Publish, data, time.Now().Add(15*time.Second), &p.stats)
				took := time.Since(sent)
				p.mu.Lock()
				switch {
				case err == nil && acked(d):
					w.acked[text] = "part"
					p.major = append(p.major, text)
					p.writes = append(p.writes, timedWrite{sent, took})
				case errors.Is(err, errUnknown):
					w.unknown[text] = "part"
					t.Errorf("majority side (%s): %s got no final answer: %v", vias[k], text, err)
				default:
					t.Errorf("majority side (%s): %s refused: %v", vias[k], text, d)
				}
				p.mu.Unlock()
				if err != nil || !acked(d) {
					return
				}
			}
		})
	}
	for k := range 2 {
		cl := c.directClient(cutoff) // one attempt of 4 s: longer than the commit timeout
		p.wgMin.Go(func() {
			for i := 0; !poll.Closed(p.quitMin); i++ {
				text := fmt.Sprintf("%s-minority-%d-%d", name, k, i)
				data := proto.Data{"user": "min", "channel": "part", "message": text, "request_id": newRequestID()}
				env, err := callEnv(cl, proto.Publish, data)
				outcome := "no answer"
				if err == nil {
					outcome = fmt.Sprintf("%v retry=%v: %v", env.Data["status"], env.Data["retry"], env.Data["description"])
				}
				p.mu.Lock()
				p.minority[text] = outcome
				w.unknown[text] = "part"
				p.mu.Unlock()
				switch {
				case err == nil && acked(env.Data):
					t.Errorf("the cut-off %s acknowledged %s: it cannot have reached a majority", c.servers[cutoff].name, text)
				case err == nil && env.Data["retry"] != true:
					t.Errorf("the cut-off %s refused %s without retry: %v", c.servers[cutoff].name, text, env.Data)
				}
				time.Sleep(20 * time.Millisecond) // a refusal comes at once: do not flood

			}
		})
	}
	return p
}

// stopMinority stops the writers to the cut-off server, and waits for
// them: a write the healed server took would be acknowledged, rightly.
func (p *partitionWriters) stopMinority() {
	close(p.quitMin)
	p.wgMin.Wait()
}

// stopMajority stops the majority's writers, and waits for them.
func (p *partitionWriters) stopMajority() {
	close(p.quitMaj)
	p.wgMaj.Wait()
}

// writesSince returns how many of the majority's writes were sent at or
// after from, and the longest any write still waiting at from took.
func (p *partitionWriters) writesSince(from time.Time) (sent int, slowest time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, w := range p.writes {
		if !w.sent.Before(from) {
			sent++
		}
		if !w.sent.Add(w.took).Before(from) {
			slowest = max(slowest, w.took)
		}
	}
	return sent, slowest
}

// waitAcked waits until the majority acknowledged n writes.
func (p *partitionWriters) waitAcked(t *testing.T, c *procCluster, n int) {
	c.waitFor(10*time.Second, "the majority side to acknowledge writes", func() bool {
		p.mu.Lock()
		defer p.mu.Unlock()
		return len(p.major) >= n
	})
}

func (p *partitionWriters) minorityAnswered() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.minority)
}

// checkRead reads the channel from the cut-off server and reports what
// it serves: a read must not miss an acknowledged write (it would be
// stale) nor show one that was never acknowledged (dirty).
func (p *partitionWriters) checkRead(t *testing.T, c *procCluster) {
	name := c.servers[p.cutoff].name
	p.mu.Lock()
	acked := maps.Clone(p.w.acked)
	minority := maps.Clone(p.minority)
	p.mu.Unlock()
	msgs, err := readChannelWithin(c.client(c.servers[p.cutoff].ep, 4*time.Second), "part", 2*time.Second)
	if err != nil {
		t.Logf("%s: the cut-off %s serves no read (%v): right, it cannot know what was committed", p.name, name, err)
		return
	}
	held := map[string]bool{}
	for _, m := range msgs {
		held[m.Text] = true
	}
	var missing, dirty int
	for text := range acked {
		if !held[text] {
			missing++
		}
	}
	for text := range minority {
		if held[text] {
			dirty++
		}
	}
	t.Logf("%s: a read from the cut-off %s serves %d posts: %d of the %d acknowledged ones are missing, %d are writes it never acknowledged",
		p.name, name, len(msgs), missing, len(acked), dirty)
	if missing > 0 {
		t.Errorf("stale read: the cut-off %s served a history without %d acknowledged writes", name, missing)
	}
	if dirty > 0 {
		t.Errorf("dirty read: the cut-off %s served %d writes that no majority holds (refused with retry, later discarded)", name, dirty)
	}
}

// report logs what the writers saw, with the number of writes to the
// cut-off server stored after healing.
func (p *partitionWriters) report(t *testing.T, unknownStored int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	outcomes := map[string]int{}
	for _, o := range p.minority {
		outcomes[o]++
	}
	var lines []string
	for _, o := range slices.Sorted(maps.Keys(outcomes)) {
		lines = append(lines, fmt.Sprintf("%d× %s", outcomes[o], o))
	}
	t.Logf("%s: the majority acknowledged %d writes during the partition (%d retries); the cut-off server answered %d writes: %s; of all writes never answered for good, %d are stored after healing",
		p.name, len(p.major), p.stats.retries.Load(), len(p.minority), strings.Join(lines, "; "), unknownStored)
}
