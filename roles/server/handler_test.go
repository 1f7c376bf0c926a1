package server

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
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

// Issue 9: a history page is bounded by bytes as well as by count, so a
// reply always fits every hop (500 posts of 4,000 bytes made a 2 MB reply
// that the broker refused). The page keeps the newest messages, says
// more: true, and paging backwards with before returns every message once.
func TestHistoryPageFitsTheReplyBudget(t *testing.T) {
	h := newHandler(t)
	ctx := context.Background()
	h.Handle(ctx, request(t, "channel", map[string]any{"channel": "big"}))
	const posts = 500
	for i := range posts {
		text := fmt.Sprintf("%05d ", i) + strings.Repeat("x", 3994)
		reply, _ := h.Handle(ctx, request(t, "publish", map[string]any{"user": "a", "channel": "big", "message": text}))
		if env := decode(t, reply); env.Data["status"] != proto.StatusOK {
			t.Fatalf("publish %d: %v", i, env.Data)
		}
	}
	budget := replyBudget(h)
	seen := map[string]bool{}
	before, pages, largest := int64(0), 0, 0
	for {
		reply, _ := h.Handle(ctx, request(t, "history", map[string]any{"channel": "big", "limit": posts, "before": before}))
		largest = max(largest, len(reply))
		if len(reply) > budget {
			t.Fatalf("page %d is %d bytes, over the reply budget of %d", pages+1, len(reply), budget)
		}
		env := decode(t, reply)
		list, _ := env.Data["messages"].([]any)
		if env.Data["status"] != proto.StatusOK || len(list) == 0 {
			t.Fatalf("page %d: %v", pages+1, env.Data)
		}
		pages++
		var ids []int64
		for _, m := range list {
			d := proto.Data(m.(map[string]any))
			text, _, _ := d.String("", "message")
			if seen[text[:5]] {
				t.Fatalf("message %s on two pages", text[:5])
			}
			seen[text[:5]] = true
			id, _, _ := d.Int("", "id")
			ids = append(ids, id)
		}
		if !slices.IsSorted(ids) {
			t.Fatalf("page %d not oldest first: %v", pages, ids)
		}
		before = ids[0]
		if more, _ := env.Data["more"].(bool); !more {
			break
		}
	}
	if len(seen) != posts || pages < 2 {
		t.Fatalf("%d messages in %d pages, want all %d over several pages", len(seen), pages, posts)
	}
	t.Logf("%d messages of 4,000 bytes in %d pages, largest reply %d bytes (budget %d)", posts, pages, largest, budget)
}

// replyBudget is the largest reply the handler may send.
func replyBudget(h *Handler) int { return h.Limits.MaxReply }

// The users and channels lists are cut to the reply budget too, and say
// more: true (a lab with tens of thousands of users would otherwise send
// a reply over the frame limit).
func TestListsFitTheReplyBudget(t *testing.T) {
	h := newHandler(t)
	h.Limits.MaxReply = proto.ReplyOverhead + h.Limits.LargestMessage()
	ctx := context.Background()
	for i := range 300 {
		name := fmt.Sprintf("%s%04d", strings.Repeat("u", 56), i)
		h.Handle(ctx, request(t, "login", map[string]any{"user": name}))
		h.Handle(ctx, request(t, "channel", map[string]any{"channel": name}))
	}
	for _, svc := range []string{"users", "channels"} {
		reply, _ := h.Handle(ctx, request(t, svc, nil))
		env := decode(t, reply)
		list, _ := env.Data["users"].([]any)
		if len(reply) > h.Limits.MaxReply || env.Data["more"] != true || len(list) == 0 || len(list) >= 300 {
			t.Fatalf("%s: %d bytes (limit %d), %d names, more %v", svc, len(reply), h.Limits.MaxReply, len(list), env.Data["more"])
		}
	}
	if err := h.Limits.Validate(); err != nil {
		t.Fatal(err)
	}
	h.Limits.MaxReply--
	if h.Limits.Validate() == nil {
		t.Fatal("a reply limit that cannot hold one message was accepted")
	}
}
