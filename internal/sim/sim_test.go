package sim

import (
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// seedsDefault is how many seeds TestSeeds runs unless CHAT_SIM_SEEDS
// says otherwise: about half a minute under -race on two cores (-short: 50).
const seedsDefault = 2000

func repro(seed int64) string {
	return "CHAT_SIM_SEED=" + strconv.FormatInt(seed, 10) + " go test ./internal/sim -run TestSeed -v"
}

// report fails t with a violation, its trace and the command that
// replays it.
func report(t *testing.T, err error) {
	t.Helper()
	if v, ok := err.(*Violation); ok {
		if len(v.Trace) > 0 {
			t.Logf("the last events:\n%s", strings.Join(v.Trace, "\n"))
		}
		t.Errorf("%v\nreplay: %s", v, repro(v.Seed))
		return
	}
	t.Error(err)
}

// TestSeeds runs many seeds, each with the options Random draws from it.
func TestSeeds(t *testing.T) {
	if os.Getenv("CHAT_SIM_SEED") != "" {
		t.Skip("CHAT_SIM_SEED is set: TestSeed runs that seed alone")
	}
	n := seedsDefault
	if s := os.Getenv("CHAT_SIM_SEEDS"); s != "" {
		var err error
		if n, err = strconv.Atoi(s); err != nil || n < 1 {
			t.Fatalf("CHAT_SIM_SEEDS=%q: want a positive number", s)
		}
	}
	if testing.Short() {
		n = min(n, 50)
	}
	begin := time.Now()
	var next, ran, acked atomic.Int64
	var mu sync.Mutex
	var failed []error
	var wg sync.WaitGroup
	for range runtime.GOMAXPROCS(0) {
		wg.Go(func() {
			for {
				seed := next.Add(1)
				if seed > int64(n) {
					return
				}
				res, err := Run(Random(seed))
				ran.Add(1)
				acked.Add(int64(res.Acked))
				if err != nil {
					mu.Lock()
					failed = append(failed, err)
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	t.Logf("ran %d seeds (1..%d) in %v: %d writes acknowledged, %d seeds failed", ran.Load(), n, time.Since(begin).Round(time.Millisecond), acked.Load(), len(failed))
	for i, err := range failed {
		if i == 10 {
			t.Errorf("... and %d more", len(failed)-10)
			break
		}
		report(t, err)
	}
}

// TestSeed replays the seed CHAT_SIM_SEED, with a trace of its last
// events when it fails.
func TestSeed(t *testing.T) {
	s := os.Getenv("CHAT_SIM_SEED")
	if s == "" {
		t.Skip("set CHAT_SIM_SEED to replay a seed")
	}
	seed, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		t.Fatalf("CHAT_SIM_SEED=%q: %v", s, err)
	}
	opt := Random(seed)
	opt.Trace = true
	t.Logf("options: %+v", opt)
	res, err := Run(opt)
	t.Logf("result: %+v", res)
	if err != nil {
		report(t, err)
	}
}

func TestDeterministic(t *testing.T) {
	for _, seed := range []int64{1, 2, 3, 42} {
		a, errA := Run(Random(seed))
		b, errB := Run(Random(seed))
		if a != b || (errA == nil) != (errB == nil) || (errA != nil && errA.Error() != errB.Error()) {
			t.Fatalf("seed %d ran twice differently:\n%+v %v\n%+v %v", seed, a, errA, b, errB)
		}
		// The trace changes nothing but what is recorded.
		opt := Random(seed)
		opt.Trace = true
		if c, _ := Run(opt); c != a {
			t.Fatalf("seed %d with a trace ran differently:\n%+v\n%+v", seed, a, c)
		}
	}
	a, _ := Run(Random(1))
	b, _ := Run(Random(2))
	if a.Digest == b.Digest {
		t.Fatalf("seeds 1 and 2 have the same digest %x", a.Digest)
	}
}

// TestQuietRun checks that a run without faults acknowledges writes and
// converges on the highest rank.
func TestQuietRun(t *testing.T) {
	for _, servers := range []int{1, 2, 3, 5} {
		res, err := Run(Options{Seed: 7, Servers: servers})
		if err != nil {
			report(t, err)
			continue
		}
		if res.Acked == 0 || res.Coordinator != "s"+strconv.Itoa(servers) || res.Failed != 0 {
			t.Errorf("%d servers without faults: %+v", servers, res)
		}
	}
}

// firstFailure runs seeds 1..n with options tweaked by tweak until one
// breaks an invariant, and returns that violation (nil if none did).
func firstFailure(n int, tweak func(*Options)) (*Violation, int) {
	for seed := int64(1); seed <= int64(n); seed++ {
		opt := Random(seed)
		tweak(&opt)
		if _, err := Run(opt); err != nil {
			v, _ := err.(*Violation)
			return v, int(seed)
		}
	}
	return nil, n
}

// TestBrokenAckIsCaught shows that the simulator can fail: a leader that
// acknowledges a write as soon as its own log holds it (not once a
// majority does) breaks invariant 2 at once, and, with that check off,
// loses an acknowledged write that the end (3) or the committed-entries
// check (4) catches.
func TestBrokenAckIsCaught(t *testing.T) {
	v, ran := firstFailure(50, func(o *Options) { o.AckOnAppend = true; o.Servers = 3 })
	if v == nil || v.Invariant != 2 {
		t.Fatalf("acknowledging on the leader's own log: %d seeds, violation %v; want invariant 2", ran, v)
	}
	t.Logf("acknowledging on the leader's own log is caught by seed %d: %v", v.Seed, v)
	v, ran = firstFailure(500, func(o *Options) { o.AckOnAppend, o.NoDurabilityCheck = true, true })
	if v == nil || (v.Invariant != 3 && v.Invariant != 4) {
		t.Fatalf("without invariant 2: %d seeds, violation %v; want invariant 3 or 4", ran, v)
	}
	t.Logf("... and without invariant 2, by seed %d (after %d seeds): %v", v.Seed, ran, v)
}

// TestResetOnlyLosesWrites shows why replication.Truncater exists: with
// logs that can only be emptied (the store today), a Node repairs a
// divergent log by emptying it, and a committed write whose majority
// needed that copy is lost.
func TestResetOnlyLosesWrites(t *testing.T) {
	v, ran := firstFailure(500, func(o *Options) { o.ResetOnly = true })
	if v == nil || v.Invariant < 2 || v.Invariant > 4 {
		t.Fatalf("Reset-only logs: %d seeds, violation %v; want a lost write (invariant 2, 3 or 4)", ran, v)
	}
	t.Logf("Reset-only logs lose a committed write with seed %d (after %d seeds): %v", v.Seed, ran, v)
}

// regressions are seeds that broke an invariant before a fix of
// replication.Node, each with what broke (on the code of the day: any
// later change of the Node or of the simulator may make a seed take
// another path; replication's unit tests keep each case for good).
var regressions = []struct {
	seed int64
	bug  string
}{
	{15, "a Reset emptied a copy a committed write needed (invariant 4): Truncater"},
	{41, "the same, and an Append's OK counted an unchecked tail as held"},
	{116, "a Reset emptied a copy a committed write needed (invariant 4): Truncater"},
	{130, "an Append's OK answered the follower's log end, past what it checked (invariant 4)"},
	{179, "an Append's OK answered the follower's log end, past what it checked (invariant 4)"},
	{23, "a server that promised an epoch to a losing candidate refused its winner for the whole epoch (invariant 3)"},
	{46, "the same"},
	{123, "a long copy outlasted CampaignTimeout and the campaign started over for ever (invariant 3)"},
	{224, "the same"},
	{7435, "a candidate copied entries of a newer epoch, then wrote its older epoch after them (invariant 0)"},
	{9196, "the same"},
}

func TestRegressionSeeds(t *testing.T) {
	for _, r := range regressions {
		if _, err := Run(Random(r.seed)); err != nil {
			t.Errorf("seed %d (%s): %v\nreplay: %s", r.seed, r.bug, err, repro(r.seed))
		}
	}
}
