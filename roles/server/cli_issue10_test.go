package server

import (
	"bytes"
	"context"
	"log/slog"
	"regexp"
	"testing"

	"github.com/vmihailenco/msgpack/v5"

	"chat/transport"
)

// Issue 10: --log-level debug showed nothing more, though the README says
// it shows every request. The handler writes one line per request: its
// service, user, outcome and the time it took.
func TestEveryRequestIsLoggedAtDebug(t *testing.T) {
	h := newHandler(t)
	var logs bytes.Buffer
	h.Log = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	ctx := context.Background()
	h.Handle(ctx, request(t, "login", map[string]any{"user": "ana"}))
	h.Handle(ctx, request(t, "login", map[string]any{"user": "bob"}))
	h.Handle(ctx, request(t, "publish", map[string]any{"user": "ana", "channel": "none", "message": "hi"}))
	h.Handle(ctx, request(t, "message", map[string]any{"src": "ana", "dst": "bob", "message": "psst"}))
	for _, want := range []string{
		`msg=request service=login user=ana outcome=OK took=\S+`,
		`msg=request service=publish user=ana outcome=erro took=\S+ why=".+"`,
		`msg=request service=message user=ana outcome=OK took=\S+`,
	} {
		if !regexp.MustCompile(want).MatchString(logs.String()) {
			t.Errorf("no line matching %s in:\n%s", want, logs.String())
		}
	}

	logs.Reset()
	h.Log = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	h.Handle(ctx, request(t, "users", map[string]any{}))
	if logs.Len() != 0 {
		t.Errorf("at info, a request is logged: %s", logs.String())
	}
}

// Issue 10: a server's Lamport clock must not go back to 0 after a
// restart: Start restores it from the largest clock its store holds.
func TestLamportClockSurvivesARestart(t *testing.T) {
	dir := t.TempDir()
	start := func() *Server {
		cfg := DefaultConfig("restarted")
		cfg.Listen, cfg.DataDir = "tcp://127.0.0.1:0", dir
		cfg.BrokerBack, cfg.BrokerPub, cfg.Reference = "", "", ""
		s, err := Start(context.Background(), cfg, nil)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	s := start()
	cl, err := transport.NewClient(transport.DefaultClientConfig(s.Addr()), nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, req := range []map[string]any{
		{"service": "channel", "data": map[string]any{"channel": "g", "clock": 1000}},
		{"service": "publish", "data": map[string]any{"user": "ana", "channel": "g", "message": "hi", "clock": 1000}},
	} {
		body, _ := msgpack.Marshal(req)
		if _, err := cl.Do(context.Background(), body); err != nil {
			t.Fatal(err)
		}
	}
	cl.Close()
	before := s.lamport.Now()
	if before <= 1000 {
		t.Fatalf("the clock did not take the requests' 1000 into account: %d", before)
	}
	s.Close()

	s = start()
	defer s.Close()
	if after := s.lamport.Now(); after < 1001 {
		t.Errorf("after a restart the Lamport clock is %d, below the %d of what it stored (before the restart: %d)", after, 1001, before)
	}
}
