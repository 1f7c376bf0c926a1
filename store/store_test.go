package store

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// ctx is the context of changes that are not expected to be cancelled.
var ctx = context.Background()

// openTest opens a store in a fresh directory and closes it at the end of the test.
func openTest(t testing.TB) (*Store, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "chat.db")
	return reopen(t, path), path
}

// reopen opens the store at path and closes it at the end of the test.
func reopen(t testing.TB, path string) *Store {
	t.Helper()
	s, err := Open(DefaultConfig(path))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// mustApply applies ch and fails the test on error.
func mustApply(t testing.TB, s *Store, ch Change) int64 {
	t.Helper()
	id, err := s.Apply(ctx, ch)
	if err != nil {
		t.Fatalf("Apply(%+v): %v", ch, err)
	}
	return id
}

func login(user string) Change { return Change{Login: &Login{User: user}} }

func create(name, creator string) Change {
	return Change{Channel: &Channel{Name: name, Creator: creator}}
}

func post(channel, from, text string) Change {
	return Change{Message: &Message{Kind: Post, Channel: channel, From: from, Text: text}}
}

func direct(from, to, text string) Change {
	return Change{Message: &Message{Kind: Direct, From: from, To: to, Text: text}}
}

// history returns the whole matching history, read page by page.
func history(t testing.TB, s *Store, q HistoryQuery) []Message {
	t.Helper()
	var all []Message
	for {
		page, err := s.History(ctx, q)
		if err != nil {
			t.Fatal(err)
		}
		if len(page) == 0 {
			return all
		}
		all = append(page, all...)
		q.Before = page[0].ID
	}
}

// ids returns the IDs of msgs.
func ids(msgs []Message) []int64 {
	var out []int64
	for _, m := range msgs {
		out = append(out, m.ID)
	}
	return out
}

// waitFor polls cond until it holds, failing the test after a few seconds.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

func TestConfig(t *testing.T) {
	if err := (Config{}).Validate(); err == nil {
		t.Error("empty Path accepted")
	}
	if err := (Config{Path: "x", MaxBatch: -1}).Validate(); err == nil {
		t.Error("negative MaxBatch accepted")
	}
	if err := DefaultConfig("x").Validate(); err != nil {
		t.Error(err)
	}
}

func TestRoundTrip(t *testing.T) {
	s, path := openTest(t)
	t0 := time.UnixMilli(1_700_000_000_123).UTC()

	mustApply(t, s, Change{Login: &Login{User: "ana", Timestamp: t0}})
	mustApply(t, s, Change{Login: &Login{User: "bia", Timestamp: t0.Add(time.Second)}})
	mustApply(t, s, Change{Login: &Login{User: "ana", Timestamp: t0.Add(2 * time.Second)}})
	mustApply(t, s, Change{Channel: &Channel{Name: "geral", Creator: "ana", Timestamp: t0}})
	p := Message{Kind: Post, Channel: "geral", From: "ana", Text: "oi", Timestamp: t0.Add(1500 * time.Microsecond), Clock: 7}
	p.ID = mustApply(t, s, Change{Message: &p})
	d := Message{Kind: Direct, From: "bia", To: "ana", Text: "olá", Timestamp: t0, Clock: 1 << 63}
	d.ID = mustApply(t, s, Change{Message: &d, RequestKey: "bia/1", Reply: []byte("ok")})
	if p.ID <= 0 || d.ID <= p.ID {
		t.Fatalf("IDs %d, %d: want positive and increasing", p.ID, d.ID)
	}
	p.Timestamp = p.Timestamp.Truncate(time.Millisecond) // stored with ms precision
	s.Close()

	s = reopen(t, path)
	if got, want := s.Users(), []string{"ana", "bia"}; !slices.Equal(got, want) {
		t.Errorf("Users = %v, want %v", got, want)
	}
	if got, want := s.Channels(), []string{"geral"}; !slices.Equal(got, want) {
		t.Errorf("Channels = %v, want %v", got, want)
	}
	if !s.HasUser("bia") || s.HasUser("caio") || !s.HasChannel("geral") || s.HasChannel("geral2") {
		t.Error("HasUser/HasChannel wrong after reopen")
	}
	logins, err := s.Logins(ctx, "ana")
	if err != nil {
		t.Fatal(err)
	}
	want := []Login{{User: "ana", Timestamp: t0}, {User: "ana", Timestamp: t0.Add(2 * time.Second)}}
	if !slices.Equal(logins, want) {
		t.Errorf("Logins = %v, want %v", logins, want)
	}
	if got := history(t, s, HistoryQuery{Channel: "geral"}); !slices.Equal(got, []Message{p}) {
		t.Errorf("channel history = %+v, want %+v", got, p)
	}
	if got := history(t, s, HistoryQuery{User: "ana", Peer: "bia"}); !slices.Equal(got, []Message{d}) {
		t.Errorf("DM history = %+v, want %+v", got, d)
	}
	if n, _ := s.Count(ctx); n != 2 {
		t.Errorf("Count = %d, want 2", n)
	}
	if reply, ok := s.Replay("bia/1"); !ok || string(reply) != "ok" {
		t.Errorf("Replay = %q, %v", reply, ok)
	}

	// The next ID continues after the reloaded ones.
	if id := mustApply(t, s, post("geral", "bia", "de volta")); id <= d.ID {
		t.Errorf("ID after reopen = %d, want > %d", id, d.ID)
	}
}

func TestHistoryChannelPaging(t *testing.T) {
	s, _ := openTest(t)
	mustApply(t, s, create("a", "ana"))
	mustApply(t, s, create("b", "ana"))
	var want []int64
	for i := range 120 {
		want = append(want, mustApply(t, s, post("a", "ana", strconv.Itoa(i))))
		mustApply(t, s, post("b", "ana", strconv.Itoa(i)))
	}

	page, err := s.History(ctx, HistoryQuery{Channel: "a"})
	if err != nil {
		t.Fatal(err)
	}
	if got := ids(page); !slices.Equal(got, want[70:]) {
		t.Errorf("newest page = %v, want %v", got, want[70:])
	}
	page, err = s.History(ctx, HistoryQuery{Channel: "a", Limit: 10, Before: want[50]})
	if err != nil {
		t.Fatal(err)
	}
	if got := ids(page); !slices.Equal(got, want[40:50]) {
		t.Errorf("page before %d = %v, want %v", want[50], got, want[40:50])
	}
	if got := ids(history(t, s, HistoryQuery{Channel: "a", Limit: 7})); !slices.Equal(got, want) {
		t.Errorf("all pages = %v, want %v", got, want)
	}
	if page, _ := s.History(ctx, HistoryQuery{Channel: "none"}); len(page) != 0 {
		t.Errorf("history of a missing channel = %v", page)
	}
}

func TestHistoryDirectPaging(t *testing.T) {
	s, _ := openTest(t)
	for _, u := range []string{"ana", "bia", "caio"} {
		mustApply(t, s, login(u))
	}
	var want []int64
	for i := range 60 {
		want = append(want, mustApply(t, s, direct("ana", "bia", strconv.Itoa(i))))
		want = append(want, mustApply(t, s, direct("bia", "ana", strconv.Itoa(i))))
		mustApply(t, s, direct("caio", "ana", "not yours"))
		mustApply(t, s, direct("bia", "caio", "not yours"))
	}
	for _, q := range []HistoryQuery{{User: "ana", Peer: "bia"}, {User: "bia", Peer: "ana"}} {
		q.Limit = 11
		got := history(t, s, q)
		if !slices.Equal(ids(got), want) {
			t.Errorf("%+v: ids = %v, want %v", q, ids(got), want)
		}
		for _, m := range got {
			if m.Kind != Direct || m.Channel != "" || pairOf(m) != [2]string{"ana", "bia"} {
				t.Errorf("%+v: unexpected message %+v", q, m)
			}
		}
	}
	if _, err := s.History(ctx, HistoryQuery{User: "ana"}); err == nil {
		t.Error("History with User but no Peer: want an error")
	}
}

// pairOf returns the sorted users of a direct message.
func pairOf(m Message) [2]string {
	low, high := pair(m.From, m.To)
	return [2]string{low, high}
}

func TestChecks(t *testing.T) {
	s, _ := openTest(t)
	if _, err := s.Apply(ctx, post("geral", "ana", "x")); !errors.Is(err, ErrNoChannel) {
		t.Errorf("post to a missing channel: %v, want ErrNoChannel", err)
	}
	if _, err := s.Apply(ctx, direct("ana", "bia", "x")); !errors.Is(err, ErrNoUser) {
		t.Errorf("DM to a missing user: %v, want ErrNoUser", err)
	}
	mustApply(t, s, create("geral", "ana"))
	if _, err := s.Apply(ctx, create("geral", "bia")); !errors.Is(err, ErrChannelExists) {
		t.Errorf("second create: %v, want ErrChannelExists", err)
	}
	if _, err := s.Apply(ctx, Change{}); err == nil {
		t.Error("empty change accepted")
	}
	if _, err := s.Apply(ctx, Change{Message: &Message{Kind: "shout", From: "ana"}}); err == nil {
		t.Error("unknown kind accepted")
	}
	if n, _ := s.Count(ctx); n != 0 {
		t.Errorf("Count = %d after failed changes, want 0", n)
	}
}

func TestConcurrentCreate(t *testing.T) {
	s, _ := openTest(t)
	var wins, exists atomic.Int32
	var wg sync.WaitGroup
	for range 32 {
		wg.Go(func() {
			switch _, err := s.Apply(ctx, create("geral", "ana")); {
			case err == nil:
				wins.Add(1)
			case errors.Is(err, ErrChannelExists):
				exists.Add(1)
			default:
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if wins.Load() != 1 || exists.Load() != 31 {
		t.Errorf("%d successes and %d ErrChannelExists, want 1 and 31", wins.Load(), exists.Load())
	}
}

func TestRequestKeys(t *testing.T) {
	s, path := openTest(t)
	mustApply(t, s, login("ana"))

	// A failed change stores the reply that describes its failure.
	replyFor := func(id int64, err error) []byte { return fmt.Appendf(nil, "%d %v", id, err) }
	_, err := s.Apply(ctx, Change{Message: &Message{Kind: Post, Channel: "x", From: "ana"},
		RequestKey: "ana/1", ReplyFunc: replyFor})
	if !errors.Is(err, ErrNoChannel) {
		t.Fatalf("post to a missing channel: %v", err)
	}
	mustApply(t, s, create("x", "ana"))
	id := mustApply(t, s, Change{Message: &Message{Kind: Post, Channel: "x", From: "ana"},
		RequestKey: "ana/2", ReplyFunc: replyFor})
	mustApply(t, s, Change{Login: &Login{User: "ana"}, RequestKey: "ana/3"}) // no reply

	// A retry is not applied twice.
	if _, err := s.Apply(ctx, Change{Message: &Message{Kind: Post, Channel: "x", From: "ana"},
		RequestKey: "ana/2"}); !errors.Is(err, ErrDuplicate) {
		t.Errorf("retry: %v, want ErrDuplicate", err)
	}
	s.Close()

	s = reopen(t, path)
	wants := map[string]string{
		"ana/1": "0 " + ErrNoChannel.Error(),
		"ana/2": fmt.Sprintf("%d <nil>", id),
		"ana/3": "",
	}
	for key, want := range wants {
		if reply, ok := s.Replay(key); !ok || string(reply) != want {
			t.Errorf("Replay(%q) = %q, %v; want %q", key, reply, ok, want)
		}
	}
	if _, ok := s.Replay("ana/4"); ok {
		t.Error("Replay of an unknown key succeeded")
	}
	if n, _ := s.Count(ctx); n != 1 {
		t.Errorf("Count = %d, want 1", n)
	}
}

func TestRequestKeyTTL(t *testing.T) {
	path := filepath.Join(t.TempDir(), "chat.db")
	s, err := Open(Config{Path: path, RequestKeyTTL: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	mustApply(t, s, Change{Login: &Login{User: "ana"}, RequestKey: "k", Reply: []byte("r")})
	time.Sleep(5 * time.Millisecond)
	if _, ok := s.Replay("k"); ok {
		t.Error("expired key replayed")
	}
	// An expired key may be used again.
	mustApply(t, s, Change{Login: &Login{User: "ana"}, RequestKey: "k", Reply: []byte("r")})
}

// blockWriter makes the writer take a change and then block before its
// next batch, so that further changes stay queued until release is called.
func blockWriter(t *testing.T, s *Store, _ string) (release func()) {
	t.Helper()
	gate := make(chan struct{})
	var once sync.Once
	hook := func() { <-gate }
	s.e.testHookBatch.Store(&hook)
	r := &request{change: login("blocker").copyWithTime(time.Now()), done: make(chan struct{})}
	s.e.queue <- r
	waitFor(t, "the writer to take the blocking change", func() bool { return r.state.Load() == taken })
	return func() { once.Do(func() { close(gate) }) }
}

func TestContextCancel(t *testing.T) {
	s, path := openTest(t)
	mustApply(t, s, create("geral", "ana"))

	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := s.Apply(cancelled, post("geral", "ana", "late")); !errors.Is(err, context.Canceled) {
		t.Errorf("Apply with a cancelled context: %v", err)
	}

	release := blockWriter(t, s, path)
	queuedCtx, cancel := context.WithCancel(ctx)
	errc := make(chan error)
	go func() {
		_, err := s.Apply(queuedCtx, post("geral", "ana", "never"))
		errc <- err
	}()
	waitFor(t, "the change to be queued", func() bool { return len(s.e.queue) == 1 })
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Errorf("Apply cancelled while queued: %v", err)
	}
	release()

	mustApply(t, s, post("geral", "ana", "after"))
	if got := history(t, s, HistoryQuery{Channel: "geral"}); len(got) != 1 || got[0].Text != "after" {
		t.Errorf("history = %+v, want only the post after", got)
	}
}

func TestCloseWithWaiters(t *testing.T) {
	s, path := openTest(t)
	mustApply(t, s, create("geral", "ana"))
	release := blockWriter(t, s, path)

	const n = 20
	errs := make(chan error, n)
	for i := range n {
		go func() {
			_, err := s.Apply(ctx, post("geral", "ana", strconv.Itoa(i)))
			errs <- err
		}()
	}
	waitFor(t, "the changes to be queued", func() bool { return len(s.e.queue) == n })

	closed := make(chan error)
	go func() { closed <- s.Close() }()
	waitFor(t, "Close to start", s.isClosed)
	if _, err := s.Apply(ctx, post("geral", "ana", "too late")); !errors.Is(err, ErrClosed) {
		t.Errorf("Apply after Close: %v, want ErrClosed", err)
	}
	release()
	if err := <-closed; err != nil {
		t.Errorf("Close: %v", err)
	}
	for range n {
		if err := <-errs; err != nil {
			t.Errorf("queued Apply: %v, want it flushed by Close", err)
		}
	}

	s = reopen(t, path)
	if got := history(t, s, HistoryQuery{Channel: "geral"}); len(got) != n {
		t.Errorf("%d posts after reopen, want %d", len(got), n)
	}
	if !s.HasUser("blocker") {
		t.Error("the blocking change was lost")
	}
}

func TestChecksSeeEarlierChangesOfTheBatch(t *testing.T) {
	s, path := openTest(t)
	release := blockWriter(t, s, path)
	before := s.Stats()

	// Queued in this order, they are taken in one batch when the writer is released.
	changes := []Change{create("geral", "ana"), login("bia"), post("geral", "ana", "hi"),
		direct("ana", "bia", "hi"), create("geral", "bia")}
	errs := make([]chan error, len(changes))
	for i, ch := range changes {
		errs[i] = make(chan error, 1)
		go func() {
			_, err := s.Apply(ctx, ch)
			errs[i] <- err
		}()
		waitFor(t, "the change to be queued", func() bool { return len(s.e.queue) == i+1 })
	}
	release()

	for i, want := range []error{nil, nil, nil, nil, ErrChannelExists} {
		if err := <-errs[i]; !errors.Is(err, want) {
			t.Errorf("change %d: %v, want %v", i, err, want)
		}
	}
	if after := s.Stats(); after.Batches-before.Batches != 2 { // the blocking change's batch, then ours
		t.Errorf("%d batches, want 2", after.Batches-before.Batches)
	}
}

func TestOddPath(t *testing.T) {
	path := filepath.Join(t.TempDir(), "a dir?#%", "chat 1.db")
	if err := os.Mkdir(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	s := reopen(t, path)
	mustApply(t, s, login("ana"))
	s.Close()
	if s = reopen(t, path); !s.HasUser("ana") {
		t.Error("user lost")
	}
	if _, err := os.Stat(path); err != nil {
		t.Error(err)
	}

	t.Chdir(filepath.Dir(path))
	s = reopen(t, "relative.db")
	mustApply(t, s, login("ana"))
	if _, err := os.Stat("relative.db"); err != nil {
		t.Error(err)
	}
}

func TestGroupCommit(t *testing.T) {
	s, _ := openTest(t)
	mustApply(t, s, create("geral", "ana"))
	before := s.Stats()

	const writers, each = 16, 100
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				if _, err := s.Apply(ctx, post("geral", "ana", fmt.Sprint(w, i))); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()

	after := s.Stats()
	commits, changes := after.Commits-before.Commits, after.Changes-before.Changes
	t.Logf("%d changes in %d commits (%.1f per commit)", changes, commits, float64(changes)/float64(commits))
	if changes != writers*each {
		t.Errorf("Changes = %d, want %d", changes, writers*each)
	}
	if commits > changes/4 {
		t.Errorf("%d commits for %d changes: group commit is not grouping", commits, changes)
	}
}

// The crash test runs a helper process that applies posts and prints the ID
// of each acknowledged one; it is killed mid-way, and every printed ID must
// be in the store afterwards.
const crashEnv = "STORE_CRASH_TEST_PATH"

func TestCrash(t *testing.T) {
	if path := os.Getenv(crashEnv); path != "" {
		crashHelper(path)
		return
	}
	if testing.Short() {
		t.Skip("starts a subprocess")
	}
	path := filepath.Join(t.TempDir(), "chat.db")
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrash$")
	cmd.Env = append(os.Environ(), crashEnv+"="+path)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}

	var acked []int64
	lines := bufio.NewScanner(out)
	for lines.Scan() {
		id, err := strconv.ParseInt(lines.Text(), 10, 64)
		if err != nil {
			t.Fatalf("helper printed %q", lines.Text())
		}
		acked = append(acked, id)
		if len(acked) == 500 {
			cmd.Process.Signal(syscall.SIGKILL)
		}
	}
	cmd.Wait()
	if len(acked) < 500 {
		t.Fatalf("helper acknowledged only %d writes", len(acked))
	}

	s := reopen(t, path)
	stored := map[int64]bool{}
	for before := int64(0); ; {
		page := history(t, s, HistoryQuery{Channel: "crash", Limit: MaxHistoryLimit, Before: before})
		if len(page) == 0 {
			break
		}
		for _, m := range page {
			stored[m.ID] = true
		}
		before = page[0].ID
	}
	for _, id := range acked {
		if !stored[id] {
			t.Errorf("acknowledged message %d lost", id)
		}
	}
	t.Logf("%d acknowledged, %d stored", len(acked), len(stored))
}

// crashHelper applies posts from 8 goroutines and prints each acknowledged
// ID, until it is killed (or gives up after a while).
func crashHelper(path string) {
	s, err := Open(DefaultConfig(path))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if _, err := s.Apply(ctx, create("crash", "ana")); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	var mu sync.Mutex
	deadline := time.Now().Add(30 * time.Second)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for time.Now().Before(deadline) {
				id, err := s.Apply(ctx, post("crash", "ana", "x"))
				if err != nil {
					fmt.Fprintln(os.Stderr, err)
					os.Exit(1)
				}
				mu.Lock()
				fmt.Println(id)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	os.Exit(0)
}

// Benchmarks.

// writers is the number of concurrent writers in the Apply benchmarks.
const writers = 16

// benchApply measures posts applied by 16 concurrent writers to s.
func benchApply(b *testing.B, s *Store) {
	before := s.Stats()
	b.SetParallelism(max(1, writers/runtime.GOMAXPROCS(0))) // goroutines per CPU
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := s.Apply(ctx, post("c0", "ana", "benchmark message")); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	after := s.Stats()
	b.ReportMetric(float64(after.Changes-before.Changes)/float64(after.Commits-before.Commits), "changes/commit")
}

func BenchmarkApplyParallel(b *testing.B) {
	s, _ := openTest(b)
	mustApply(b, s, create("c0", "ana"))
	benchApply(b, s)
}

// BenchmarkApplySerial is one writer: one commit, so one fsync, per change.
func BenchmarkApplySerial(b *testing.B) {
	s, _ := openTest(b)
	mustApply(b, s, create("c0", "ana"))
	for b.Loop() {
		mustApply(b, s, post("c0", "ana", "benchmark message"))
	}
}

func BenchmarkApplyParallelAfter100k(b *testing.B) {
	path := filepath.Join(b.TempDir(), "chat.db")
	copyFile(b, preloaded(b), path)
	benchApply(b, reopen(b, path))
}

func BenchmarkHistory(b *testing.B) {
	path := filepath.Join(b.TempDir(), "chat.db")
	copyFile(b, preloaded(b), path)
	s := reopen(b, path)
	newest, err := s.History(ctx, HistoryQuery{Channel: "c3", Limit: 1})
	if err != nil || len(newest) != 1 {
		b.Fatal(newest, err)
	}
	middle := newest[0].ID / 2
	for _, bm := range []struct {
		name string
		q    HistoryQuery
	}{
		{"channel/newest50", HistoryQuery{Channel: "c3"}},
		{"channel/middle50", HistoryQuery{Channel: "c3", Before: middle}},
		{"dm/newest50", HistoryQuery{User: "u3", Peer: "u4"}},
		{"channel/newest500", HistoryQuery{Channel: "c3", Limit: 500}},
	} {
		b.Run(bm.name, func(b *testing.B) {
			for b.Loop() {
				msgs, err := s.History(ctx, bm.q)
				if err != nil || len(msgs) == 0 {
					b.Fatal(len(msgs), err)
				}
			}
		})
	}
}

// BenchmarkFsync measures one small write plus fsync in the test's
// directory: the floor of a commit's latency on this disk.
func BenchmarkFsync(b *testing.B) {
	f, err := os.Create(filepath.Join(b.TempDir(), "fsync"))
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	page := make([]byte, 4096)
	for b.Loop() {
		if _, err := f.WriteAt(page, 0); err != nil {
			b.Fatal(err)
		}
		if err := f.Sync(); err != nil {
			b.Fatal(err)
		}
	}
}

// The preloaded store is built once per test binary, then copied.
var (
	preloadOnce sync.Once
	preloadDir  string
	preloadErr  error
)

const preloadCount = 100_000

// preloaded returns the path of a closed store holding 100,000 messages:
// posts in channels c0..c9 and DMs between users u0..u19.
func preloaded(b *testing.B) string {
	preloadOnce.Do(func() {
		preloadDir, preloadErr = os.MkdirTemp("", "store-bench-")
		if preloadErr != nil {
			return
		}
		start := time.Now()
		path := filepath.Join(preloadDir, "chat.db")
		if preloadErr = preload(path); preloadErr != nil {
			return
		}
		if _, err := os.Stat(path + "-wal"); err == nil {
			preloadErr = errors.New("the WAL file is left after Close; copying the main file is not enough")
			return
		}
		b.Logf("preloaded %d messages in %v", preloadCount, time.Since(start))
	})
	if preloadErr != nil {
		b.Fatal(preloadErr)
	}
	return filepath.Join(preloadDir, "chat.db")
}

// preload fills a new store at path. Many concurrent writers make the
// writer commit big batches.
func preload(path string) error {
	s, err := Open(DefaultConfig(path))
	if err != nil {
		return err
	}
	defer s.Close()
	for i := range 20 {
		if _, err := s.Apply(ctx, login(fmt.Sprint("u", i))); err != nil {
			return err
		}
	}
	for i := range 10 {
		if _, err := s.Apply(ctx, create(fmt.Sprint("c", i), "u0")); err != nil {
			return err
		}
	}
	const workers = 1024
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for range workers {
		wg.Go(func() {
			for i := next.Add(1); i <= preloadCount; i = next.Add(1) {
				ch := post(fmt.Sprint("c", i%10), fmt.Sprint("u", i%20), "preloaded message number "+strconv.FormatInt(i, 10))
				if k := i / 10; i%10 == 0 { // every tenth is a DM, spread over all pairs
					ch = direct(fmt.Sprint("u", k%20), fmt.Sprint("u", k/20%20), "preloaded DM")
				}
				if _, err := s.Apply(ctx, ch); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	return <-errs
}

// copyFile copies the file at src to dst.
func copyFile(t testing.TB, src, dst string) {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestMain(m *testing.M) {
	code := m.Run()
	if preloadDir != "" {
		os.RemoveAll(preloadDir)
	}
	os.Exit(code)
}

// BenchmarkApplyConcurrent is 16 goroutines posting to one channel; it
// reports the CPU time of the whole process (writer, syncer, indexer and
// callers, until SQLite holds every post) per acknowledged write, which
// ns/op, a wall-clock figure on a machine shared with other work, hides.
// It runs with the default SyncInterval and with none: the pause is a
// timer, and Go sleeps at least 1 ms for one under 1 ms when every
// goroutine waits, which here is often.
func BenchmarkApplyConcurrent(b *testing.B) {
	for _, bm := range []struct {
		name string
		sync time.Duration
		keys bool // every post has a request key, as the server's do
	}{{"sync=default", 0, false}, {"sync=none", -1, false}, {"sync=default/keys", 0, true}} {
		b.Run(bm.name, func(b *testing.B) {
			cfg := DefaultConfig(tempPath(b))
			if bm.sync != 0 {
				cfg.SyncInterval = bm.sync
			}
			benchConcurrent(b, openConfig(b, cfg), bm.keys)
		})
	}
}

func benchConcurrent(b *testing.B, s *Store, keys bool) {
	mustApply(b, s, create("c0", "ana"))
	e, done := s.engine()
	defer done()
	var left atomic.Int64
	left.Store(int64(b.N))
	var wg sync.WaitGroup
	before := s.Stats()
	cpuBefore, writesBefore := cpuTime(b), writeCalls()
	start := time.Now()
	b.ResetTimer()
	for range writers {
		wg.Go(func() {
			for n := left.Add(-1); n >= 0; n = left.Add(-1) {
				ch := post("c0", "ana", "benchmark message")
				if keys {
					ch.RequestKey, ch.Reply = "ana/"+strconv.FormatInt(n, 10), []byte(`{"ok":true}`)
				}
				if _, err := s.Apply(ctx, ch); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if err := e.waitIndexed(); err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	elapsed := time.Since(start)
	cpu, calls := cpuTime(b)-cpuBefore, writeCalls()-writesBefore
	after := s.Stats()
	b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-µs/write")
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "writes/s")
	b.ReportMetric(float64(after.Changes-before.Changes)/float64(after.Commits-before.Commits), "changes/commit")
	b.ReportMetric(float64(after.Batches-before.Batches)/float64(after.Commits-before.Commits), "batches/commit")
	if writesBefore >= 0 {
		b.ReportMetric(float64(calls)/float64(b.N), "syscw/write")
	}
}

// writeCalls returns how many write system calls the process has made
// (SQLite's too), or -1 where /proc does not tell: unlike CPU time, a
// count the machine's noise does not blur.
func writeCalls() int64 {
	data, err := os.ReadFile("/proc/self/io")
	if err != nil {
		return -1
	}
	for line := range strings.Lines(string(data)) {
		if n, ok := strings.CutPrefix(line, "syscw: "); ok {
			if v, err := strconv.ParseInt(strings.TrimSpace(n), 10, 64); err == nil {
				return v
			}
		}
	}
	return -1
}

// cpuTime returns the user and system CPU time the process has used.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
