package server

import (
	"context"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"chat/clock"
	"chat/proto"
	"chat/store"
)

func newHandler(t testing.TB) *Handler {
	t.Helper()
	st, err := store.Open(store.DefaultConfig(filepath.Join(t.TempDir(), "h.db")))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return &Handler{Store: st, Lamport: &clock.Lamport{}, Clock: clock.NewPhysical(nil, 0), Limits: proto.DefaultLimits(), Log: slog.New(slog.DiscardHandler)}
}

func request(t testing.TB, service string, data map[string]any) []byte {
	t.Helper()
	b, err := msgpack.Marshal(map[string]any{"service": service, "data": data})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func decode(t testing.TB, b []byte) proto.Envelope {
	t.Helper()
	env, err := proto.Decode(b)
	if err != nil {
		t.Fatalf("reply is not an envelope: %v", err)
	}
	return env
}

func TestHandlerPublishesOnlyWhatItStored(t *testing.T) {
	h := newHandler(t)
	ctx := context.Background()
	h.Handle(ctx, request(t, "channel", map[string]any{"channel": "g"}))
	reply, pubs := h.Handle(ctx, request(t, "publish", map[string]any{"user": "a", "channel": "g", "message": "hi", "clock": 41}))
	if env := decode(t, reply); env.Data["status"] != proto.StatusOK || env.Data.Clock() <= 41 {
		t.Fatalf("publish reply %v", env.Data)
	}
	if len(pubs) != 1 || pubs[0].Topic != "g" {
		t.Fatalf("publications %v", pubs)
	}
	got, err := proto.DecodePublication(pubs[0].Frames())
	if err != nil || got.Post.Text != "hi" || got.Post.Clock <= 41 {
		t.Fatalf("publication %+v %v", got.Post, err)
	}
	// A post to a channel that does not exist publishes nothing.
	reply, pubs = h.Handle(ctx, request(t, "publish", map[string]any{"user": "a", "channel": "nope", "message": "x"}))
	if env := decode(t, reply); env.Data["status"] != proto.StatusError || len(pubs) != 0 {
		t.Fatalf("reply %v, publications %v", env.Data, pubs)
	}
}

func TestHandlerReplayKeepsFirstAnswerAcrossRestart(t *testing.T) {
	dir := t.TempDir()
	open := func() *Handler {
		st, err := store.Open(store.DefaultConfig(filepath.Join(dir, "h.db")))
		if err != nil {
			t.Fatal(err)
		}
		return &Handler{Store: st, Lamport: &clock.Lamport{}, Clock: clock.NewPhysical(nil, 0), Limits: proto.DefaultLimits(), Log: slog.New(slog.DiscardHandler)}
	}
	h := open()
	ctx := context.Background()
	req := request(t, "channel", map[string]any{"channel": "g", "request_id": "x1"})
	first := decode(t, must(h.Handle(ctx, req)))
	h.Store.Close()
	h = open()
	defer h.Store.Close()
	again := decode(t, must(h.Handle(ctx, req)))
	if first.Data["status"] != proto.StatusSuccess || again.Data["status"] != proto.StatusSuccess {
		t.Fatalf("first %v, retry %v: a retried create must get its first answer", first.Data, again.Data)
	}
}

func must(reply []byte, _ []proto.Publication) []byte { return reply }

// FuzzHandler feeds arbitrary frames to the request logic: every one gets
// exactly one well-formed reply, and nothing panics.
func FuzzHandler(f *testing.F) {
	f.Add(request(f, "login", map[string]any{"user": "alice"}))
	f.Add(request(f, "channel", map[string]any{"channel": "g"}))
	f.Add(request(f, "publish", map[string]any{"user": "a", "channel": "g", "message": "m", "request_id": "1"}))
	f.Add(request(f, "message", map[string]any{"src": "a", "dst": "alice", "message": "m"}))
	f.Add(request(f, "history", map[string]any{"channel": "g", "limit": 2}))
	f.Add(request(f, "history", map[string]any{"user": "a", "peer": "alice", "before": 3}))
	f.Add([]byte{0xdf, 0xff, 0xff, 0xff, 0xff})
	h := newHandler(f)
	f.Fuzz(func(t *testing.T, frame []byte) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		reply, _ := h.Handle(ctx, frame)
		env, err := proto.Decode(reply)
		if err != nil {
			t.Fatalf("reply to %x is not an envelope: %v", frame, err)
		}
		if _, ok := env.Data["clock"]; !ok {
			t.Fatalf("reply without clock: %v", env)
		}
	})
}
