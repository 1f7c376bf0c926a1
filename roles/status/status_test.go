package status

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-zeromq/zmq4"
	"go.uber.org/goleak"

	"chat/clock"
	"chat/internal/poll"
	"chat/internal/testnet"
	"chat/proto"
	"chat/roles/reference"
	"chat/transport"
)

// TestMain fails the package if goroutines outlive the tests.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// waitFor is poll.WaitFor.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	poll.WaitFor(t, timeout, what, cond)
}

var at = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

type fixedClock struct{}

func (fixedClock) Now() time.Time { return at }

func goldenReport() Report {
	return Report{
		Reference: "tcp://localhost:5559",
		Time:      at,
		Servers: []ServerStatus{
			{Name: "alpha", Rank: 1, Addr: "tcp://10.0.0.1:5560", State: Up, Ours: true,
				Role: ptr("follower"), Coordinator: ptr("gamma"), Epoch: ptr(uint64(3)), OffsetMs: ptr(-12.25),
				TimeMs: ptr(int64(1740830400000)), Clock: ptr(uint64(420)), Messages: ptr(int64(1234)), LSN: ptr(uint64(1300)), Commit: ptr(uint64(1299))},
			{Name: "beta", Rank: 2, Addr: "tcp://10.0.0.2:5560", State: Down, Note: "tcp://10.0.0.2:5560 did not answer within 500ms"},
			{Name: "gamma", Rank: 3, Addr: "tcp://10.0.0.3:5560", State: Up, Ours: true,
				Role: ptr("leader"), Coordinator: ptr("gamma"), Epoch: ptr(uint64(3)), OffsetMs: ptr(0.0),
				Clock: ptr(uint64(431)), Messages: ptr(int64(1234)), LSN: ptr(uint64(1300)), Commit: ptr(uint64(1300))},
			{Name: "theirs", Rank: 4, Addr: "tcp://10.0.0.4:6000", State: Up, Clock: ptr(uint64(17)), Note: `answers, but not status: unknown service "status"`},
			{Name: "lost", Rank: 5, State: NoAddr, Note: "registered no address"},
		},
	}
}

const golden = `reference tcp://localhost:5559 at 2025-03-01 12:00:00.000 UTC
5 servers listed, 3 answering

   NAME    RANK  ADDRESS              ALIVE    ROLE      COORDINATOR  EPOCH  OFFSET_MS  CLOCK  MESSAGES  LSN   COMMIT
   alpha   1     tcp://10.0.0.1:5560  up       follower  gamma        3      -12.2      420    1234      1300  1299
   beta    2     tcp://10.0.0.2:5560  down     -         -            -      -          -      -         -     -
*  gamma   3     tcp://10.0.0.3:5560  up       leader    gamma        3      +0.0       431    1234      1300  1300
   theirs  4     tcp://10.0.0.4:6000  up       ?         ?            ?      ?          17     ?         ?     ?
   lost    5     -                    no addr  -         -            -      -          -      -         -     -

* coordinator: gamma (followed by 2 of the 3 answering)
beta: tcp://10.0.0.2:5560 did not answer within 500ms
theirs: answers, but not status: unknown service "status"
lost: registered no address
`

func TestRenderGolden(t *testing.T) {
	var b bytes.Buffer
	Render(&b, goldenReport())
	if b.String() != golden {
		t.Errorf("Render:\n%s\nwant:\n%s", b.String(), golden)
	}
}

func TestRenderDisagreementAndFailures(t *testing.T) {
	r := goldenReport()
	r.Servers[0].Coordinator = ptr("alpha") // alpha thinks it leads; gamma is a leader too
	r.Servers[2].Coordinator = ptr("")      // a leader naming nobody follows itself
	var b bytes.Buffer
	Render(&b, r)
	if want := "servers disagree on the coordinator: alpha follows alpha; gamma follows gamma (* marks alpha, the most followed)\n"; !strings.Contains(b.String(), want) {
		t.Errorf("no disagreement line %q in:\n%s", want, b.String())
	}
	if !strings.Contains(b.String(), "*  alpha") {
		t.Errorf("alpha not marked:\n%s", b.String())
	}

	b.Reset()
	Render(&b, Report{Reference: "tcp://x:1", Time: at, Err: "tcp://x:1 did not answer within 2s"})
	if want := "reference tcp://x:1 at 2025-03-01 12:00:00.000 UTC\nthe reference gave no list: tcp://x:1 did not answer within 2s\n"; b.String() != want {
		t.Errorf("Render of a failed snapshot = %q, want %q", b.String(), want)
	}
	b.Reset()
	Render(&b, Report{Reference: "tcp://x:1", Time: at})
	if !strings.Contains(b.String(), "the reference lists no live server") {
		t.Errorf("Render of an empty list = %q", b.String())
	}
}

// fakeServer is a ROUTER that answers every request with answer's reply.
type fakeServer struct {
	sock   zmq4.Socket
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

func startFake(t *testing.T, answer func(proto.Envelope) proto.Envelope) *fakeServer {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	sock, err := transport.ListenSocket(ctx, zmq4.NewRouter, "tcp://127.0.0.1:0")
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	f := &fakeServer{sock: sock, cancel: cancel}
	var lamport clock.Lamport
	f.wg.Go(func() {
		for {
			msg, err := sock.Recv()
			if err != nil {
				if ctx.Err() != nil {
					return
				}
				continue
			}
			req, err := transport.SplitRoute(msg.Frames)
			if err != nil {
				continue
			}
			env, err := proto.Decode(req.Body)
			lamport.Observe(env.Data.Clock())
			var reply proto.Envelope
			if err != nil {
				reply = proto.ReplyFor(proto.ErrorService, err)
			} else {
				reply = answer(env)
			}
			sock.Send(req.Reply(reply.Stamp(time.Now(), lamport.Tick()).Encode()))
		}
	})
	t.Cleanup(f.close)
	return f
}

func (f *fakeServer) close() {
	f.cancel()
	f.sock.Close()
	f.wg.Wait()
}

func (f *fakeServer) addr() string { return transport.BoundEndpoint(f.sock) }

func ours(env proto.Envelope) proto.Envelope {
	if env.Service != Service {
		return proto.ErrorReply(env.Service, "unknown service")
	}
	return proto.Envelope{Service: Service, Data: proto.Data{
		"name": "ours", "rank": 1, "role": "leader", "coordinator": "ours", "epoch": uint64(7),
		"offset_ms": -1.5, "time_ms": int64(1740830400123), "messages": 42, "lsn": uint64(50), "commit": uint64(49),
	}}
}

func theirs(env proto.Envelope) proto.Envelope {
	return proto.ErrorReply(env.Service, "unknown service \""+env.Service+"\"")
}

func startReference(t *testing.T) *reference.Reference {
	t.Helper()
	cfg := reference.DefaultConfig()
	cfg.Listen, cfg.DataDir = "tcp://127.0.0.1:0", t.TempDir()
	r, err := reference.Start(context.Background(), cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// register asks the reference for a rank for name at addr.
func register(t *testing.T, ref *reference.Reference, name, addr string) {
	t.Helper()
	c, err := transport.NewClient(transport.DefaultClientConfig(ref.Addr()), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	d := proto.Data{"user": name}
	if addr != "" {
		d["addr"] = addr
	}
	b, err := c.Do(context.Background(), proto.Envelope{Service: reference.ServiceRank, Data: d}.Stamp(time.Now(), 1).Encode())
	if err != nil {
		t.Fatal(err)
	}
	if env, err := proto.Decode(b); err != nil || env.Data["rank"] == nil {
		t.Fatalf("rank(%s): %v %v", name, env, err)
	}
}

func testConfig(ref string) Config {
	cfg := DefaultConfig()
	cfg.Reference = ref
	cfg.ReferenceTimeout = time.Second
	cfg.ServerTimeout = 300 * time.Millisecond
	cfg.DialTimeout = 300 * time.Millisecond
	cfg.Clock = fixedClock{}
	return cfg
}

func TestSnapshot(t *testing.T) {
	ref := startReference(t)
	good, foreign := startFake(t, ours), startFake(t, theirs)
	register(t, ref, "ours", good.addr())
	register(t, ref, "down", testnet.FreeEndpoint(t))
	register(t, ref, "theirs", foreign.addr())
	register(t, ref, "noaddr", "")
	silent, err := transport.ListenSocket(context.Background(), zmq4.NewRouter, "tcp://127.0.0.1:0") // never reads
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	register(t, ref, "silent", transport.BoundEndpoint(silent))

	lamport := &clock.Lamport{}
	cfg := testConfig(ref.Addr())
	cfg.Lamport = lamport
	rep, err := Snapshot(context.Background(), cfg)
	if err != nil {
		t.Fatalf("Snapshot: %v", err)
	}
	if rep.Reference != ref.Addr() || !rep.Time.Equal(at) || rep.Err != "" || len(rep.Servers) != 5 {
		t.Fatalf("report = %+v", rep)
	}
	s := rep.Servers[0]
	if s.Name != "ours" || s.Rank != 1 || s.Addr != good.addr() || s.State != Up || !s.Ours || s.Note != "" {
		t.Errorf("ours = %+v", s)
	}
	if s.Role == nil || *s.Role != "leader" || s.Coordinator == nil || *s.Coordinator != "ours" ||
		s.Epoch == nil || *s.Epoch != 7 || s.OffsetMs == nil || *s.OffsetMs != -1.5 ||
		s.TimeMs == nil || *s.TimeMs != 1740830400123 || s.Clock == nil || *s.Clock == 0 ||
		s.Messages == nil || *s.Messages != 42 || s.LSN == nil || *s.LSN != 50 || s.Commit == nil || *s.Commit != 49 {
		t.Errorf("ours' fields = %s", show(s.Role, "nil"))
	}
	if s := rep.Servers[1]; s.Name != "down" || s.State != Down || s.Note == "" || s.Role != nil || s.Clock != nil {
		t.Errorf("down = %+v", s)
	}
	if s := rep.Servers[2]; s.Name != "theirs" || s.State != Up || s.Ours || s.Clock == nil || s.Role != nil ||
		!strings.Contains(s.Note, `unknown service "status"`) {
		t.Errorf("theirs = %+v", s)
	}
	if s := rep.Servers[3]; s.Name != "noaddr" || s.State != NoAddr {
		t.Errorf("noaddr = %+v", s)
	}
	if s := rep.Servers[4]; s.Name != "silent" || s.State != Down || s.Note != transport.BoundEndpoint(silent)+" did not answer within 300ms" {
		t.Errorf("silent = %+v", s)
	}
	for _, s := range rep.Servers[:3] {
		if s.Clock != nil && lamport.Now() <= *s.Clock {
			t.Errorf("the tool's Lamport clock %d did not pass %s's %d", lamport.Now(), s.Name, *s.Clock)
		}
	}

	var b bytes.Buffer
	Render(&b, rep)
	for _, want := range []string{"*  ours", "* coordinator: ours (followed by 1 of the 2 answering)", "down: cannot connect: connection refused"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("render lacks %q:\n%s", want, b.String())
		}
	}
}

func TestSnapshotFailures(t *testing.T) {
	// No reference.
	rep, err := Snapshot(context.Background(), testConfig(testnet.FreeEndpoint(t)))
	if err == nil || rep.Err != "cannot connect: connection refused" || errors.Is(err, ErrNoServer) {
		t.Errorf("Snapshot without a reference: %v, report %+v", err, rep)
	}

	// A reference that lists nobody.
	ref := startReference(t)
	if _, err := Snapshot(context.Background(), testConfig(ref.Addr())); !errors.Is(err, ErrNoServer) {
		t.Errorf("Snapshot of an empty list: %v, want ErrNoServer", err)
	}

	// A reference whose servers are all silent.
	register(t, ref, "gone", testnet.FreeEndpoint(t))
	register(t, ref, "mute", "")
	rep, err = Snapshot(context.Background(), testConfig(ref.Addr()))
	if !errors.Is(err, ErrNoServer) || len(rep.Servers) != 2 {
		t.Errorf("Snapshot with only dead servers: %v, report %+v", err, rep)
	}
	var b bytes.Buffer
	if err := Run(context.Background(), testConfig(ref.Addr()), &b); !errors.Is(err, ErrNoServer) {
		t.Errorf("Run with only dead servers = %v", err)
	}
	if !strings.Contains(b.String(), "0 answering") || !strings.Contains(b.String(), "gone: ") {
		t.Errorf("Run printed:\n%s", b.String())
	}
}

func TestRunWatchRedrawsUntilCancelled(t *testing.T) {
	ref := startReference(t)
	good := startFake(t, ours)
	register(t, ref, "ours", good.addr())

	cfg := testConfig(ref.Addr())
	cfg.Watch, cfg.Interval = true, 20*time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	out := &poll.Output{}
	done := make(chan error, 1)
	go func() { done <- Run(ctx, cfg, out) }()
	waitFor(t, 10*time.Second, "three snapshots", func() bool { return strings.Count(out.String(), "reference tcp://") >= 3 })
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run after cancel = %v, want nil (the last snapshot was fine)", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not stop when its context ended")
	}
	s := out.String()
	if strings.Contains(s, "\x1b[") {
		t.Errorf("escape codes written to a buffer:\n%q", s)
	}
	if !strings.Contains(s, "\n\nreference tcp://") {
		t.Errorf("snapshots not separated by a blank line:\n%s", s)
	}
}

func TestConfigValidate(t *testing.T) {
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatalf("default config: %v", err)
	}
	for name, edit := range map[string]func(*Config){
		"no reference":   func(c *Config) { c.Reference = "" },
		"no interval":    func(c *Config) { c.Interval = 0 },
		"no ref timeout": func(c *Config) { c.ReferenceTimeout = 0 },
		"no timeout":     func(c *Config) { c.ServerTimeout = -1 },
		"no dial":        func(c *Config) { c.DialTimeout = 0 },
	} {
		cfg := DefaultConfig()
		edit(&cfg)
		if cfg.Validate() == nil {
			t.Errorf("%s: Validate accepted %+v", name, cfg)
		}
	}
}
