package reference

import (
	"context"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"
	"go.uber.org/goleak"

	"chat/internal/fakeclock"
	"chat/internal/poll"
	"chat/logging"
	"chat/proto"
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

// testLog is a logger for the test: into buf (nil: nowhere), and to stderr
// when CHAT_TEST_LOG is set.
func testLog(buf *poll.Output) *slog.Logger {
	var handlers []slog.Handler
	if buf != nil {
		handlers = append(handlers, logging.New(buf, logging.Options{Level: slog.LevelDebug}).Handler())
	}
	if os.Getenv("CHAT_TEST_LOG") != "" {
		handlers = append(handlers, logging.New(os.Stderr, logging.Options{Level: slog.LevelDebug}).Handler())
	}
	if len(handlers) == 0 {
		return slog.New(slog.DiscardHandler)
	}
	return slog.New(slog.NewMultiHandler(handlers...))
}

func testConfig(dir string) Config {
	cfg := DefaultConfig()
	cfg.Listen = "tcp://127.0.0.1:0"
	cfg.DataDir = dir
	cfg.CheckInterval = 20 * time.Millisecond
	return cfg
}

func start(t *testing.T, cfg Config, log *slog.Logger) *Reference {
	t.Helper()
	r, err := Start(context.Background(), cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

func dial(t *testing.T, ep string) *transport.Client {
	t.Helper()
	cfg := transport.DefaultClientConfig(ep)
	cfg.Attempts = 1
	c, err := transport.NewClient(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// call sends one raw frame and decodes the reply, checking the stamps
// every reply must carry.
func call(t *testing.T, c *transport.Client, frame []byte) proto.Envelope {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	b, err := c.Do(ctx, frame)
	if err != nil {
		t.Fatalf("request: %v", err)
	}
	env, err := proto.Decode(b)
	if err != nil {
		t.Fatalf("reply is not an envelope: %v", err)
	}
	if _, ok := env.Data.Timestamp(); !ok {
		t.Errorf("reply %v has no timestamp", env)
	}
	if _, ok := env.Data["clock"]; !ok {
		t.Errorf("reply %v has no clock", env)
	}
	return env
}

func request(t *testing.T, c *transport.Client, service string, d proto.Data) proto.Envelope {
	t.Helper()
	if d == nil {
		d = proto.Data{}
	}
	d["timestamp"] = time.Now().Unix()
	if _, ok := d["clock"]; !ok {
		d["clock"] = 1
	}
	return call(t, c, proto.Envelope{Service: service, Data: d}.Encode())
}

func rankOf(t *testing.T, c *transport.Client, name, addr string) int64 {
	t.Helper()
	d := proto.Data{"user": name}
	if addr != "" {
		d["addr"] = addr
	}
	env := request(t, c, ServiceRank, d)
	n, ok, err := env.Data.Int(ServiceRank, "rank")
	if env.Service != ServiceRank || !ok || err != nil {
		t.Fatalf("rank(%q) reply = %v", name, env)
	}
	return n
}

func listOf(t *testing.T, c *transport.Client) []Server {
	t.Helper()
	env := request(t, c, ServiceList, nil)
	servers, err := ParseList(env.Data)
	if env.Service != ServiceList || err != nil {
		t.Fatalf("list reply = %v: %v", env, err)
	}
	return servers
}

func isError(env proto.Envelope) bool {
	s, _, _ := env.Data.String(env.Service, "status")
	return s == proto.StatusError
}

func TestEveryService(t *testing.T) {
	logs := &poll.Output{}
	r := start(t, testConfig(t.TempDir()), testLog(logs))
	c := dial(t, r.Addr())

	if n := rankOf(t, c, "alpha", "tcp://127.0.0.1:7001"); n != 1 {
		t.Errorf("first rank = %d, want 1", n)
	}
	if n := rankOf(t, c, "beta", ""); n != 2 {
		t.Errorf("second rank = %d, want 2", n)
	}
	if n := rankOf(t, c, "alpha", ""); n != 1 {
		t.Errorf("alpha re-registered with rank %d, want 1", n)
	}

	list := listOf(t, c)
	if len(list) != 2 || list[0] != (Server{Name: "alpha", Rank: 1, Addr: "tcp://127.0.0.1:7001"}) || list[1] != (Server{Name: "beta", Rank: 2}) {
		t.Errorf("list = %+v", list)
	}

	env := request(t, c, ServiceHeartbeat, proto.Data{"user": "beta", "addr": "tcp://127.0.0.1:7002"})
	if st, _, _ := env.Data.String(ServiceHeartbeat, "status"); env.Service != ServiceHeartbeat || st != proto.StatusOK {
		t.Errorf("heartbeat reply = %v", env)
	}
	if list := listOf(t, c); len(list) != 2 || list[1].Addr != "tcp://127.0.0.1:7002" {
		t.Errorf("the heartbeat's addr was not recorded: %+v", list)
	}

	env = request(t, c, ServiceHeartbeat, proto.Data{"user": "ghost"})
	if desc, _, _ := env.Data.String(ServiceHeartbeat, "description"); !isError(env) || desc != `unknown server "ghost": register with rank first` {
		t.Errorf("heartbeat from an unknown server = %v", env)
	}

	// The clock follows Lamport's rule: max(local, received) + 1, then +1 to send.
	env = request(t, c, ServiceList, proto.Data{"clock": 1000})
	if got := env.Data.Clock(); got != 1002 {
		t.Errorf("reply clock after receiving 1000 = %d, want 1002", got)
	}

	if got := r.List(time.Now()); len(got) != 2 {
		t.Errorf("Reference.List = %+v", got)
	}
	for _, want := range []string{"registered server alpha with rank 1", "registered server beta with rank 2", "server alpha re-registered (rank 1)", "role=reference", "clock="} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("logs lack %q:\n%s", want, logs.String())
		}
	}
}

func TestBadInputGetsAnErrorAndTheSocketKeepsWorking(t *testing.T) {
	r := start(t, testConfig(t.TempDir()), testLog(nil))
	c := dial(t, r.Addr())
	rankOf(t, c, "known", "")

	enc := func(v any) []byte {
		b, err := msgpack.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	for _, tc := range []struct {
		name, service, want string
		frame               []byte
	}{
		{"garbage", "error", "not valid MessagePack", []byte{0xc1, 0x00, 0xff}},
		{"empty frame", "error", "not valid MessagePack", []byte{}},
		{"not a map", "error", "must be a MessagePack map", enc([]any{"rank"})},
		{"service not a string", "error", `"service" must be a string`, enc(map[string]any{"service": 7})},
		{"data not a map", "rank", `"data" must be a map`, enc(map[string]any{"service": "rank", "data": "x"})},
		{"unknown service", "login", `unknown service "login"`, enc(map[string]any{"service": "login", "data": map[string]any{"user": "a"}})},
		{"rank without user", "rank", `"user" (the server's name) is required`, enc(map[string]any{"service": "rank", "data": map[string]any{}})},
		{"rank with a number", "rank", `"user" must be a string`, enc(map[string]any{"service": "rank", "data": map[string]any{"user": 12}})},
		{"rank with a bad name", "rank", "whitespace", enc(map[string]any{"service": "rank", "data": map[string]any{"user": "two words"}})},
		{"rank with a long name", "rank", "the limit is 64", enc(map[string]any{"service": "rank", "data": map[string]any{"user": strings.Repeat("n", 65)}})},
		{"addr not a string", "rank", `"addr" must be a string`, enc(map[string]any{"service": "rank", "data": map[string]any{"user": "a", "addr": true}})},
		{"addr too long", "rank", "the limit is 256", enc(map[string]any{"service": "rank", "data": map[string]any{"user": "a", "addr": strings.Repeat("x", 257)}})},
		{"heartbeat without user", "heartbeat", `"user" (the server's name) is required`, enc(map[string]any{"service": "heartbeat"})},
		{"heartbeat with a map", "heartbeat", `"user" must be a string`, enc(map[string]any{"service": "heartbeat", "data": map[string]any{"user": map[string]any{}}})},
		{"huge frame", "error", "the limit is", enc(map[string]any{"service": "rank", "data": map[string]any{"pad": strings.Repeat("x", 70<<10)}})},
	} {
		env := call(t, c, tc.frame)
		desc, _, _ := env.Data.String(env.Service, "description")
		if !isError(env) || env.Service != tc.service || !strings.Contains(desc, tc.want) {
			t.Errorf("%s: reply %v, want an erro for service %q saying %q", tc.name, env, tc.service, tc.want)
		}
	}
	if n := rankOf(t, c, "known", ""); n != 1 {
		t.Errorf("after bad input, rank = %d, want 1", n)
	}
	if got := r.Known(); len(got) != 1 {
		t.Errorf("bad input registered something: %+v", got)
	}
}

func TestRestartOnTheSameDataKeepsRanks(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(dir)
	r := start(t, cfg, testLog(nil))
	c := dial(t, r.Addr())
	for i, name := range []string{"s1", "s2", "s3"} {
		if n := rankOf(t, c, name, "tcp://127.0.0.1:700"+string(rune('1'+i))); n != int64(i+1) {
			t.Fatalf("rank(%s) = %d", name, n)
		}
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}

	r = start(t, cfg, testLog(nil))
	c = dial(t, r.Addr())
	if list := listOf(t, c); len(list) != 0 {
		t.Errorf("after a restart, list = %+v, want nobody until heard from", list)
	}
	env := request(t, c, ServiceHeartbeat, proto.Data{"user": "s2"})
	if isError(env) {
		t.Fatalf("heartbeat of a server registered before the restart: %v", env)
	}
	if n := rankOf(t, c, "s3", ""); n != 3 {
		t.Errorf("rank(s3) after restart = %d, want 3", n)
	}
	if n := rankOf(t, c, "s4", ""); n != 4 {
		t.Errorf("rank(s4) after restart = %d, want 4", n)
	}
	list := listOf(t, c)
	if len(list) != 3 || list[0].Name != "s2" || list[0].Addr != "tcp://127.0.0.1:7002" || list[1].Name != "s3" || list[2].Name != "s4" {
		t.Errorf("list after restart = %+v", list)
	}
}

func TestSilentServersLeaveTheList(t *testing.T) {
	logs := &poll.Output{}
	fake := fakeclock.New(time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC))
	cfg := testConfig(t.TempDir())
	cfg.Clock = fake
	r := start(t, cfg, testLog(logs))
	c := dial(t, r.Addr())
	rankOf(t, c, "quiet", "")
	rankOf(t, c, "chatty", "")

	fake.Advance(2 * time.Second)
	request(t, c, ServiceHeartbeat, proto.Data{"user": "chatty"})
	fake.Advance(1500 * time.Millisecond) // quiet: 3.5 s of silence; chatty: 1.5 s
	if list := listOf(t, c); len(list) != 1 || list[0].Name != "chatty" {
		t.Errorf("list = %+v, want only chatty", list)
	}
	waitFor(t, 5*time.Second, "the log of quiet leaving", func() bool {
		return strings.Contains(logs.String(), "server quiet left the list (no heartbeat for 3s)")
	})
	fake.Advance(2 * time.Second)
	waitFor(t, 5*time.Second, "chatty to leave the list", func() bool { return len(r.List(fake.Now())) == 0 })
	waitFor(t, 5*time.Second, "the log of chatty leaving", func() bool {
		return strings.Contains(logs.String(), "server chatty left the list")
	})
	request(t, c, ServiceHeartbeat, proto.Data{"user": "quiet"})
	if list := listOf(t, c); len(list) != 1 || list[0] != (Server{Name: "quiet", Rank: 1}) {
		t.Errorf("after quiet's heartbeat, list = %+v", list)
	}
	if !strings.Contains(logs.String(), "server quiet is back in the list (rank 1)") {
		t.Errorf("no log of quiet coming back:\n%s", logs.String())
	}
}

func TestConfigValidate(t *testing.T) {
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatalf("default config: %v", err)
	}
	for name, edit := range map[string]func(*Config){
		"no listen":       func(c *Config) { c.Listen = "" },
		"no data":         func(c *Config) { c.DataDir = "" },
		"zero timeout":    func(c *Config) { c.ServerTimeout = 0 },
		"check too slow":  func(c *Config) { c.CheckInterval = c.ServerTimeout + 1 },
		"no check":        func(c *Config) { c.CheckInterval = 0 },
		"no queue":        func(c *Config) { c.Queue = 0 },
		"no name limit":   func(c *Config) { c.Limits.MaxName = 0 },
		"no frame limits": func(c *Config) { c.Limits.MaxRequest = 0 },
	} {
		cfg := DefaultConfig()
		edit(&cfg)
		if cfg.Validate() == nil {
			t.Errorf("%s: Validate accepted %+v", name, cfg)
		}
	}
}

// FuzzHandle checks that any frame gets exactly one reply that is an
// envelope carrying a timestamp and a clock.
func FuzzHandle(f *testing.F) {
	for _, seed := range []proto.Envelope{
		{Service: ServiceRank, Data: proto.Data{"user": "s1", "addr": "tcp://h:1", "clock": 3}},
		{Service: ServiceHeartbeat, Data: proto.Data{"user": "s1"}},
		{Service: ServiceHeartbeat, Data: proto.Data{"user": "nobody"}},
		{Service: ServiceList},
		{Service: "election", Data: proto.Data{"user": 1.5}},
	} {
		f.Add(seed.Encode())
	}
	f.Add([]byte{0x81, 0xa7, 's', 'e', 'r', 'v', 'i', 'c', 'e'})
	cfg := testConfig(f.TempDir())
	r, err := Start(context.Background(), cfg, nil)
	if err != nil {
		f.Fatal(err)
	}
	defer r.Close()
	f.Fuzz(func(t *testing.T, frame []byte) {
		env, err := proto.Decode(r.Handle(frame))
		if err != nil {
			t.Fatalf("reply to %x is not an envelope: %v", frame, err)
		}
		if _, ok := env.Data.Timestamp(); !ok || env.Data.Clock() == 0 {
			t.Fatalf("reply to %x lacks its stamps: %v", frame, env)
		}
	})
}
