package bot

import (
	"bytes"
	"chat/internal/clustertest"
	"context"
	"fmt"
	"log/slog"
	"regexp"
	"strings"
	"testing"
	"time"
)

// startSystem starts a broker and one server behind it and returns the
// broker's front and pub-out endpoints once it routes requests.
func startSystem(t *testing.T) (front, pubOut string) {
	t.Helper()
	c := clustertest.Start(t, 1)
	return c.Broker.FrontAddr(), c.Broker.PubOutAddr()
}

func TestBotsAgainstBrokerAndServer(t *testing.T) {
	front, pubOut := startSystem(t)
	cfg := DefaultConfig()
	cfg.Count, cfg.Servers, cfg.Sub = 4, []string{front}, pubOut
	cfg.Duration, cfg.StatsEvery = 2*time.Second, 500*time.Millisecond
	var out clustertest.Output
	sum, err := Run(t.Context(), cfg, &out, clustertest.Log())
	if err != nil {
		t.Fatal(err)
	}
	t.Log(sum)
	if sum.Acked == 0 || sum.Errors != 0 {
		t.Errorf("want acked > 0 and no errors, got %v", sum)
	}
	if sum.Sent < sum.Acked || sum.Sent > sum.Acked+int64(cfg.Count) { // at most one in flight per bot at the end
		t.Errorf("sent and acked disagree: %v", sum)
	}
	if sum.Received == 0 {
		t.Errorf("the bots' subscriptions received nothing: %v", sum)
	}
	if sum.P50 <= 0 || sum.P99 < sum.P50 || sum.Elapsed < cfg.Duration {
		t.Errorf("bad latency or elapsed time: %v", sum)
	}
	text := out.String()
	if strings.Count(text, "msg/s p50=") < 2 || !strings.Contains(text, "bots stopped: "+sum.String()) {
		t.Errorf("want stat lines and the summary, got:\n%s", text)
	}
}

func TestBotsRespectRate(t *testing.T) {
	front, _ := startSystem(t)
	cfg := DefaultConfig()
	cfg.Count, cfg.Servers, cfg.Sub = 2, []string{front}, ""
	cfg.Rate, cfg.Duration = 20, time.Second
	sum, err := Run(t.Context(), cfg, &clustertest.Output{}, clustertest.Log())
	if err != nil {
		t.Fatal(err)
	}
	// 2 bots × 20/s × 1s = 40 at most (the first tick comes after one period).
	if sum.Sent > 42 || sum.Acked < 20 || sum.Errors != 0 {
		t.Errorf("rate 20/s per bot for 1s: %v", sum)
	}
}

func TestBotsCountErrorsAndStopOnCancel(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Servers, cfg.Sub = []string{"tcp://127.0.0.1:1"}, "tcp://127.0.0.1:1"
	cfg.RequestTimeout, cfg.DialTimeout, cfg.Attempts, cfg.ErrorBackoff, cfg.Retries = 100*time.Millisecond, 100*time.Millisecond, 1, 10*time.Millisecond, 0
	cfg.StatsEvery = 20 * time.Millisecond
	ctx, cancel := context.WithCancel(t.Context())
	var out clustertest.Output
	done := make(chan Summary, 1)
	go func() {
		sum, _ := Run(ctx, cfg, &out, nil)
		done <- sum
	}()
	failing := regexp.MustCompile(`errors=[1-9]`)
	deadline := time.Now().Add(5 * time.Second)
	for !failing.MatchString(out.String()) { // a stat line shows failed logins
		if time.Now().After(deadline) {
			t.Fatalf("no failure counted:\n%s", out.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	select {
	case sum := <-done:
		if sum.Errors == 0 || sum.Acked != 0 {
			t.Errorf("no server: want errors and nothing acked, got %v", sum)
		}
		if !strings.Contains(out.String(), "bots stopped: ") {
			t.Errorf("no summary after cancel:\n%s", out.String())
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after ctx ended")
	}
}

func TestValidate(t *testing.T) {
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatal(err)
	}
	bad := []func(*Config){
		func(c *Config) { c.Count = 0 },
		func(c *Config) { c.Servers = nil },
		func(c *Config) { c.Rate = -1 },
		func(c *Config) { c.StatsEvery = 0 },
		func(c *Config) { c.PerChannel = 0 },
		func(c *Config) { c.Attempts = 0 },
	}
	for i, f := range bad {
		c := DefaultConfig()
		f(&c)
		if c.Validate() == nil {
			t.Errorf("bad config %d accepted", i)
		}
	}
}

// Issue 10: a run where nothing answered ended with exit 0 and
// sent=0 acked=0 errors=0. Run now fails, saying why.
func TestRunThatDidNothingFails(t *testing.T) {
	servers := []string{"tcp://127.0.0.1:1"}
	for _, tc := range []struct {
		sum  Summary
		want string
	}{
		{Summary{}, "bot: nothing answered at tcp://127.0.0.1:1: not one request got a reply (is the broker running there?)"},
		{Summary{Answered: 5, Errors: 5}, "bot: no message was acknowledged, and 5 requests failed (the log says why)"},
		{Summary{Answered: 5, Sent: 2, Acked: 2, Errors: 3}, ""},
		{Summary{Answered: 1}, ""}, // logged in, stopped before the first message
	} {
		err := outcome(tc.sum, servers)
		if got := fmt.Sprint(err); tc.want == "" && err != nil || tc.want != "" && got != tc.want {
			t.Errorf("outcome(%+v) = %v, want %q", tc.sum, err, tc.want)
		}
	}
}

// Issue 10: the bots' log lines carry their Lamport clock, as the
// servers' do.
func TestBotLogsItsLamportClock(t *testing.T) {
	var logs bytes.Buffer
	b := newBot(DefaultConfig(), &stats{}, slog.New(slog.NewTextHandler(&logs, nil)))
	defer b.req.Close()
	b.lamport.Observe(41)
	b.log.Info("hello")
	if !strings.Contains(logs.String(), "clock=42") || !strings.Contains(logs.String(), "bot="+b.name) {
		t.Errorf("a bot's log line lacks its clock or name: %s", logs.String())
	}
}
