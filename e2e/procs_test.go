package e2e

// Helpers of the cluster fault tests (cluster_fault_test.go,
// partition_test.go): a whole cluster as real processes of the built
// binary — a reference, a broker and three servers — that a test kills
// with SIGKILL, stops with SIGTERM and starts again on the same data and
// ports, plus writers that know exactly which writes were acknowledged.
//
// Every process writes its log to a file of the test's temporary
// directory (every run of it appends); the last lines of each are printed
// when the test fails, and everything goes to stderr too with
// CHAT_TEST_LOG=1.

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"chat/internal/testnet"
	"chat/proto"
	"chat/transport"
)

// The processes' timeouts: short, so that a failover takes well under a
// second and a test a few seconds.
var (
	procServerFlags = []string{
		"--replicas", "3",
		"--election-timeout", "150ms", "--announce-timeout", "500ms", "--coordinator-timeout", "500ms",
		"--announce-interval", "200ms", "--ping-interval", "100ms", "--peer-timeout", "300ms",
		"--commit-timeout", "2s", "--heartbeat-interval", "100ms", "--broker-timeout", "500ms",
		"--rate-limit", "0", "--berkeley-interval", "2s",
	}
	procBrokerFlags = []string{"--heartbeat-interval", "100ms", "--server-timeout", "500ms", "--rate-limit", "0"}
	// The servers heartbeat the reference every second (a fixed interval,
	// no flag), so the reference must wait longer than that before it
	// takes a server off its list.
	procReferenceFlags = []string{"--server-timeout", "3s"}
)

// chatProc is one `chat` process that can be stopped and started again
// with the same command line.
type chatProc struct {
	t      testing.TB
	name   string
	argv   []string // the whole command line (it may start with `ip netns exec ns`)
	log    string   // its log file
	cmd    *exec.Cmd
	exited chan struct{}
	runs   int
}

// start runs the process (again).
func (p *chatProc) start() {
	p.t.Helper()
	if p.running() {
		p.t.Fatalf("%s is running already", p.name)
	}
	f, err := os.OpenFile(p.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		p.t.Fatal(err)
	}
	p.runs++
	fmt.Fprintf(f, "=== %s: run %d: %s\n", time.Now().Format("15:04:05.000"), p.runs, strings.Join(p.argv, " "))
	cmd := exec.Command(p.argv[0], p.argv[1:]...)
	var w io.Writer = f
	if os.Getenv("CHAT_TEST_LOG") != "" {
		w = io.MultiWriter(f, prefixWriter{p.name, os.Stderr})
	}
	cmd.Stdout, cmd.Stderr = w, w
	// Should the test binary die (a test timeout), its children die too.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		f.Close()
		p.t.Fatalf("start %s: %v", p.name, err)
	}
	exited := make(chan struct{})
	go func() {
		cmd.Wait()
		fmt.Fprintf(f, "=== %s: run %d ended: %v\n", time.Now().Format("15:04:05.000"), p.runs, cmd.ProcessState)
		f.Close()
		close(exited)
	}()
	p.cmd, p.exited = cmd, exited
}

// running reports whether the process was started and has not exited.
func (p *chatProc) running() bool {
	if p.cmd == nil {
		return false
	}
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

// signal sends sig and waits up to within for the process to exit; then
// it is killed. It returns the process's exit state (nil when it was not
// running) and an error when sig did not end it in time.
func (p *chatProc) signal(sig syscall.Signal, within time.Duration) (*os.ProcessState, error) {
	if p.cmd == nil {
		return nil, nil
	}
	cmd := p.cmd
	p.cmd = nil
	_ = cmd.Process.Signal(sig)
	timer := time.NewTimer(within)
	defer timer.Stop()
	select {
	case <-p.exited:
		return cmd.ProcessState, nil
	case <-timer.C:
		_ = cmd.Process.Kill()
		<-p.exited
		return cmd.ProcessState, fmt.Errorf("%s did not exit within %v of %v", p.name, within, sig)
	}
}

// kill9 kills the process with SIGKILL and waits for it.
func (p *chatProc) kill9() {
	p.t.Helper()
	if _, err := p.signal(syscall.SIGKILL, 10*time.Second); err != nil {
		p.t.Fatal(err)
	}
}

// logTail returns the last n lines of the process's log file.
func (p *chatProc) logTail(n int) string {
	f, err := os.Open(p.log)
	if err != nil {
		return err.Error()
	}
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		lines = append(lines, sc.Text())
		if len(lines) > 2*n {
			lines = slices.Clone(lines[len(lines)-n:])
		}
	}
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// prefixWriter writes each chunk to w after its process's name.
type prefixWriter struct {
	name string
	w    io.Writer
}

func (p prefixWriter) Write(b []byte) (int, error) {
	for line := range strings.SplitSeq(strings.TrimRight(string(b), "\n"), "\n") {
		fmt.Fprintf(p.w, "[%s] %s\n", p.name, line)
	}
	return len(b), nil
}

// procServer is one server of a procCluster.
type procServer struct {
	name string
	ep   string // its listen and advertised endpoint
	proc *chatProc
	st   *transport.Client // direct client for status polls
}

// procCluster is a reference, a broker and three servers, each a process.
type procCluster struct {
	t      *testing.T
	bin    string
	dir    string
	lab    *netLab // nil: everything on 127.0.0.1
	ref    *chatProc
	broker *chatProc

	refEP, front, back, pubIn, pubOut string
	servers                           []*procServer
}

// startProcCluster starts a reference, a broker and three servers
// (server-1..3, ranks 1..3) and returns once server-3 leads the other
// two. With lab, each server runs in its own network namespace of lab
// and the reference and the broker on the lab's host address; without,
// everything runs on 127.0.0.1.
func startProcCluster(t *testing.T, lab *netLab) *procCluster {
	t.Helper()
	c := &procCluster{t: t, bin: buildChat(t), dir: t.TempDir(), lab: lab}
	host := "127.0.0.1"
	if lab != nil {
		host = lab.hostIP
	}
	c.refEP, c.front, c.back, c.pubIn, c.pubOut = testnet.FreeEndpointOn(t, host), testnet.FreeEndpointOn(t, host),
		testnet.FreeEndpointOn(t, host), testnet.FreeEndpointOn(t, host), testnet.FreeEndpointOn(t, host)
	t.Cleanup(c.close)

	c.ref = c.newProc("reference", nil, append([]string{"reference", "--listen", c.refEP, "--data", filepath.Join(c.dir, "reference")}, procReferenceFlags...))
	c.broker = c.newProc("broker", nil, append([]string{"broker", "--front", c.front, "--back", c.back,
		"--pub-in", c.pubIn, "--pub-out", c.pubOut}, procBrokerFlags...))
	c.ref.start()
	c.broker.start()
	for i := range 3 {
		name := fmt.Sprintf("server-%d", i+1)
		ep := testnet.FreeEndpointOn(t, host)
		var wrap []string
		if lab != nil {
			ep = "tcp://" + lab.ips[i] + ":5560" // a namespace of its own: any port is free
			wrap = lab.exec(i)
		}
		args := append([]string{"server", "--name", name, "--listen", ep, "--advertise", ep,
			"--reference", c.refEP, "--broker-back", c.back, "--broker-pub", c.pubIn, "--broker-sub", c.pubOut,
			"--data", filepath.Join(c.dir, name)}, procServerFlags...)
		s := &procServer{name: name, ep: ep, proc: c.newProc(name, wrap, args), st: c.client(ep, 500*time.Millisecond)}
		c.servers = append(c.servers, s)
	}
	// The lowest ranks first: the reference gives ranks in order of
	// registration, and server-3 must be the highest.
	for i, s := range c.servers {
		s.proc.start()
		c.waitFor(10*time.Second, s.name+" to register and answer", func() bool {
			st, err := c.status(i)
			r, _, _ := st.Int("", "rank")
			return err == nil && r > 0
		})
	}
	for i, s := range c.servers {
		if st, err := c.status(i); err == nil && statusInt(st, "rank") != int64(i+1) {
			t.Fatalf("%s has rank %d, want %d", s.name, statusInt(st, "rank"), i+1)
		}
	}
	c.waitLeader([]int{0, 1, 2}, 2, 15*time.Second)
	return c
}

func (c *procCluster) newProc(name string, wrap, args []string) *chatProc {
	argv := append(slices.Clone(wrap), c.bin)
	argv = append(argv, args...)
	return &chatProc{t: c.t, name: name, argv: argv, log: filepath.Join(c.dir, name+".log")}
}

// client returns a request client to ep: one attempt of timeout each.
func (c *procCluster) client(ep string, timeout time.Duration) *transport.Client {
	cfg := transport.DefaultClientConfig(ep)
	cfg.Timeout, cfg.Attempts, cfg.DialTimeout = timeout, 1, timeout
	cl, err := transport.NewClient(cfg, nil)
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() { cl.Close() })
	return cl
}

// brokerClient returns a client of the broker's front end, for writers.
func (c *procCluster) brokerClient() *transport.Client { return c.client(c.front, 4*time.Second) }

// directClient returns a client of server i's own socket.
func (c *procCluster) directClient(i int) *transport.Client {
	return c.client(c.servers[i].ep, 4*time.Second)
}

// close kills every process (the test is over) and shows the end of
// their logs when the test failed.
func (c *procCluster) close() {
	procs := []*chatProc{c.ref, c.broker}
	for _, s := range c.servers {
		procs = append(procs, s.proc)
	}
	if c.t.Failed() && c.ref != nil && c.ref.running() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		out, err := exec.CommandContext(ctx, c.bin, "status", "--reference", c.refEP, "--timeout", "300ms").CombinedOutput()
		cancel()
		c.t.Logf("chat status at the end (%v):\n%s", err, out)
	}
	for _, p := range procs {
		if p != nil {
			p.signal(syscall.SIGKILL, 10*time.Second)
		}
	}
	if c.t.Failed() || os.Getenv("CHAT_TEST_LOGTAIL") != "" {
		for _, p := range procs {
			if p != nil {
				c.t.Logf("--- end of %s's log (%s):\n%s", p.name, p.log, p.logTail(60))
			}
		}
	}
}

// start starts server i again (same data, same port).
func (c *procCluster) start(i int) { c.servers[i].proc.start() }

// kill9 kills server i with SIGKILL.
func (c *procCluster) kill9(i int) { c.servers[i].proc.kill9() }

// stop stops server i with SIGTERM and fails the test unless it exits
// cleanly within 10 s.
func (c *procCluster) stop(i int) {
	c.t.Helper()
	st, err := c.servers[i].proc.signal(syscall.SIGTERM, 10*time.Second)
	if err != nil {
		c.t.Fatal(err)
	}
	if st != nil && !st.Success() {
		c.t.Errorf("%s exited with %v after SIGTERM", c.servers[i].name, st)
	}
}

// status asks server i for its status (one attempt, 500 ms).
func (c *procCluster) status(i int) (proto.Data, error) {
	env, err := callEnv(c.servers[i].st, "status", nil)
	if err != nil {
		return nil, err
	}
	if env.Data["status"] == proto.StatusError {
		return env.Data, fmt.Errorf("status: %v", env.Data["description"])
	}
	return env.Data, nil
}

// statusInt is an integer field of a status (0 when missing).
func statusInt(st proto.Data, key string) int64 {
	n, _, _ := st.Int("", key)
	return n
}

// statusStr is a string field of a status.
func statusStr(st proto.Data, key string) string {
	s, _, _ := st.String("", key)
	return s
}

// leaderAmong returns the index of the server that leads among those
// given — it says it is the replication leader, and every other one
// answers as a follower of it, with it as the Bully coordinator too —
// and the statuses; -1 when there is no such server.
func (c *procCluster) leaderAmong(among []int) (int, map[int]proto.Data) {
	sts := map[int]proto.Data{}
	leader := -1
	for _, i := range among {
		st, err := c.status(i)
		if err != nil {
			return -1, sts
		}
		sts[i] = st
		if statusStr(st, "role") == "leader" {
			if leader >= 0 {
				return -1, sts // two leaders
			}
			leader = i
		}
	}
	if leader < 0 {
		return -1, sts
	}
	name := c.servers[leader].name
	for _, i := range among {
		st := sts[i]
		if statusStr(st, "coordinator") != name || statusStr(st, "leader") != name {
			return -1, sts
		}
		if i != leader && statusStr(st, "role") != "follower" {
			return -1, sts
		}
	}
	return leader, sts
}

// waitLeader waits until server want leads the servers among (want -1:
// any of them) and returns its index.
func (c *procCluster) waitLeader(among []int, want int, timeout time.Duration) int {
	c.t.Helper()
	got := -1
	var last map[int]proto.Data
	deadline := time.Now().Add(timeout)
	for {
		got, last = c.leaderAmong(among)
		if got >= 0 && (want < 0 || got == want) {
			return got
		}
		if time.Now().After(deadline) {
			who := "one server"
			if want >= 0 {
				who = c.servers[want].name
			}
			c.t.Fatalf("%s did not lead servers %v within %v; statuses:\n%s", who, among, timeout, c.describe(last))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// describe renders statuses for a failure message.
func (c *procCluster) describe(sts map[int]proto.Data) string {
	var b strings.Builder
	for i, s := range c.servers {
		st, ok := sts[i]
		if !ok {
			fmt.Fprintf(&b, "  %s: no answer\n", s.name)
			continue
		}
		fmt.Fprintf(&b, "  %s: role=%s coordinator=%s leader=%s epoch=%d lsn=%d commit=%d messages=%d\n", s.name,
			statusStr(st, "role"), statusStr(st, "coordinator"), statusStr(st, "leader"),
			statusInt(st, "epoch"), statusInt(st, "lsn"), statusInt(st, "commit"), statusInt(st, "messages"))
	}
	return b.String()
}

// waitConverged waits until all three servers answer, one leads, and
// every one holds the leader's whole log, all of it committed.
func (c *procCluster) waitConverged(timeout time.Duration) map[int]proto.Data {
	c.t.Helper()
	var sts map[int]proto.Data
	deadline := time.Now().Add(timeout)
	for {
		var leader int
		leader, sts = c.leaderAmong([]int{0, 1, 2})
		if leader >= 0 {
			lsn := statusInt(sts[leader], "lsn")
			ok := statusInt(sts[leader], "commit") == lsn
			for _, st := range sts {
				ok = ok && statusInt(st, "lsn") == lsn
			}
			if ok {
				return sts
			}
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("the cluster did not converge within %v:\n%s", timeout, c.describe(sts))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitFor polls cond every 20 ms until it holds or timeout passes.
func (c *procCluster) waitFor(timeout time.Duration, what string, cond func() bool) {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			c.t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// endpointPort is the port of a tcp://host:port endpoint.
func endpointPort(t testing.TB, ep string) string {
	_, port, err := net.SplitHostPort(strings.TrimPrefix(ep, "tcp://"))
	if err != nil {
		t.Fatal(err)
	}
	return port
}

// writeStats counts what writers went through.
type writeStats struct {
	retries atomic.Int64 // attempts after the first
	noReply atomic.Int64 // attempts that got no reply at all
}

// errUnknown is returned when a write got no final answer in time: it
// may or may not have been applied.
var errUnknown = errors.New("no final answer")

// sendUntilFinal sends one write until it gets a final answer: a
// retryable erro ("retry": true) or no reply is answered by sending the
// same frame again — the same request_id, which the servers must apply
// once — until deadline. It returns the final reply's data, or
// errUnknown (wrapped) when the deadline passed first.
func sendUntilFinal(cl *transport.Client, service string, data proto.Data, deadline time.Time, st *writeStats) (proto.Data, error) {
	frame := proto.Envelope{Service: service, Data: data}.Stamp(time.Now(), clockOfTests.Add(1)).Encode()
	var last string
	for attempt := 0; ; attempt++ {
		if !time.Now().Before(deadline) {
			return nil, fmt.Errorf("%w after %d attempts (last: %s)", errUnknown, attempt, last)
		}
		if attempt > 0 && st != nil {
			st.retries.Add(1)
		}
		ctx, cancel := context.WithDeadline(context.Background(), deadline)
		reply, err := cl.Do(ctx, frame)
		cancel()
		switch {
		case err != nil:
			last = err.Error()
			if st != nil {
				st.noReply.Add(1)
			}
		default:
			env, err := proto.Decode(reply)
			if err != nil {
				last = err.Error()
				break
			}
			if retry, _ := env.Data["retry"].(bool); retry {
				last = fmt.Sprint(env.Data["description"])
				break
			}
			return env.Data, nil
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// acked reports whether a final reply acknowledges the write.
func acked(d proto.Data) bool {
	return d["status"] == proto.StatusOK || d["status"] == proto.StatusSuccess
}

// mustWrite sends a write until it is acknowledged (15 s at most) and
// fails the test otherwise.
func mustWrite(t testing.TB, cl *transport.Client, service string, data proto.Data) {
	t.Helper()
	d, err := sendUntilFinal(cl, service, data, time.Now().Add(15*time.Second), nil)
	if err != nil {
		t.Fatalf("%s %v: %v", service, data, err)
	}
	if !acked(d) {
		t.Fatalf("%s %v refused: %v", service, data, d)
	}
}

// reqIDs numbers the request_ids of the tests.
var reqIDs atomic.Int64

func newRequestID() string { return fmt.Sprintf("e2e-%d-%d", os.Getpid(), reqIDs.Add(1)) }

// histMsg is one message of a history.
type histMsg struct {
	ID   int64
	Text string
}

// readChannel reads the whole history of a channel from one server,
// oldest first, paging with before (500 a page); retryable answers are
// asked again for up to 10 s.
func readChannel(cl *transport.Client, channel string) ([]histMsg, error) {
	return readChannelWithin(cl, channel, 10*time.Second)
}

// readChannelWithin is readChannel giving each page up to patience.
func readChannelWithin(cl *transport.Client, channel string, patience time.Duration) ([]histMsg, error) {
	var pages [][]histMsg
	before := int64(0)
	for {
		d, err := readWithin(cl, proto.History, proto.Data{"channel": channel, "limit": 500, "before": before}, patience)
		if err != nil {
			return nil, err
		}
		list, ok := d["messages"].([]any)
		if !ok {
			return nil, fmt.Errorf("history of %s: no messages in %v", channel, d)
		}
		if len(list) == 0 {
			break
		}
		page := make([]histMsg, 0, len(list))
		for _, m := range list {
			md, _ := m.(map[string]any)
			id, _, _ := proto.Data(md).Int("", "id")
			page = append(page, histMsg{ID: id, Text: fmt.Sprint(md["message"])})
		}
		pages = append(pages, page)
		before = page[0].ID
		if len(pages) > 1000 {
			return nil, fmt.Errorf("history of %s: more than 1000 pages", channel)
		}
	}
	var out []histMsg
	for i := len(pages) - 1; i >= 0; i-- {
		out = append(out, pages[i]...)
	}
	return out, nil
}

// readOK sends a read until it is not refused with "retry" (10 s at
// most) and returns its answer; an erro is an error.
func readOK(cl *transport.Client, service string, data proto.Data) (proto.Data, error) {
	return readWithin(cl, service, data, 10*time.Second)
}

func readWithin(cl *transport.Client, service string, data proto.Data, patience time.Duration) (proto.Data, error) {
	d, err := sendUntilFinal(cl, service, data, time.Now().Add(patience), nil)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", service, err)
	}
	if d["status"] == proto.StatusError {
		return d, fmt.Errorf("%s: %v", service, d["description"])
	}
	return d, nil
}

// readList is the users or channels list of one server.
func readList(cl *transport.Client, service string) ([]string, error) {
	d, err := readOK(cl, service, nil)
	if err != nil {
		return nil, err
	}
	return asStrings(d[service]), nil
}

// expectedWrites is what a test knows was written: acknowledged
// messages (each with its channel), and messages whose fate is unknown.
type expectedWrites struct {
	acked    map[string]string // text → channel
	unknown  map[string]string // text → channel: sent, never answered for good
	users    []string          // acknowledged logins
	channels []string          // acknowledged channels
}

func newExpectedWrites() *expectedWrites {
	return &expectedWrites{acked: map[string]string{}, unknown: map[string]string{}}
}

// checkEverywhere reads users, channels and the history of every channel
// from each server directly, and checks that the servers hold the same
// messages with the same ids in the same order, every text at most once,
// every acknowledged message, user and channel. It returns the number of
// messages whose fate was unknown that the servers hold.
func (c *procCluster) checkEverywhere(w *expectedWrites) (unknownStored int) {
	c.t.Helper()
	chans := map[string]bool{}
	for _, ch := range w.acked {
		chans[ch] = true
	}
	for _, ch := range w.unknown {
		chans[ch] = true
	}
	for _, ch := range w.channels {
		chans[ch] = true
	}
	var first map[string][]histMsg
	for i, s := range c.servers {
		cl := c.client(s.ep, 5*time.Second)
		users, err := readList(cl, proto.Users)
		if err != nil {
			c.t.Fatalf("%s: %v", s.name, err)
		}
		channels, err := readList(cl, proto.Channels)
		if err != nil {
			c.t.Fatalf("%s: %v", s.name, err)
		}
		for _, u := range w.users {
			if !slices.Contains(users, u) {
				c.t.Errorf("%s lost the acknowledged user %q", s.name, u)
			}
		}
		for _, ch := range w.channels {
			if !slices.Contains(channels, ch) {
				c.t.Errorf("%s lost the acknowledged channel %q", s.name, ch)
			}
		}
		got := map[string][]histMsg{}
		seen := map[string]int{}
		for ch := range chans {
			msgs, err := readChannel(cl, ch)
			if err != nil {
				c.t.Fatalf("%s: %v", s.name, err)
			}
			got[ch] = msgs
			for _, m := range msgs {
				seen[m.Text]++
			}
		}
		var dup, lost []string
		for text, n := range seen {
			if n > 1 {
				dup = append(dup, fmt.Sprintf("%s×%d", text, n))
			}
		}
		for text := range w.acked {
			if seen[text] == 0 {
				lost = append(lost, text)
			}
		}
		if len(dup) > 0 {
			slices.Sort(dup)
			c.t.Errorf("%s holds %d messages more than once, e.g. %v", s.name, len(dup), dup[:min(5, len(dup))])
		}
		if len(lost) > 0 {
			slices.Sort(lost)
			c.t.Errorf("%s lost %d of %d acknowledged messages, e.g. %v", s.name, len(lost), len(w.acked), lost[:min(5, len(lost))])
		}
		if i == 0 {
			first = got
			for text := range w.unknown {
				if seen[text] > 0 {
					unknownStored++
				}
			}
			continue
		}
		for ch := range chans {
			if !slices.Equal(got[ch], first[ch]) {
				c.t.Errorf("channel %s: %s holds %d messages, %s %d, not the same ids and order; first difference: %s",
					ch, s.name, len(got[ch]), c.servers[0].name, len(first[ch]), firstDifference(first[ch], got[ch]))
			}
		}
	}
	return unknownStored
}

// firstDifference describes where two histories part.
func firstDifference(a, b []histMsg) string {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return fmt.Sprintf("at %d: %+v vs %+v", i, a[i], b[i])
		}
	}
	return fmt.Sprintf("one is a prefix of the other (%d vs %d)", len(a), len(b))
}

// median of durations.
func median(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// roundAll rounds durations to the millisecond for the logs.
func roundAll(ds []time.Duration) []time.Duration {
	out := make([]time.Duration, len(ds))
	for i, d := range ds {
		out[i] = d.Round(time.Millisecond)
	}
	return out
}
