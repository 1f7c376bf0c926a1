package e2e

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"chat/internal/clustertest"
	"chat/proto"
)

// TestServicesDirectAndThroughBroker runs every client service against a
// server directly and through the broker.
func TestServicesDirectAndThroughBroker(t *testing.T) {
	c := startCluster(t, 1)
	for _, via := range []struct{ name, ep string }{
		{"direct", c.Servers[0].Addr()},
		{"broker", c.Broker.FrontAddr()},
	} {
		t.Run(via.name, func(t *testing.T) {
			cl := newClient(t, via.ep)
			alice, bob, ch := "alice-"+via.name, "bob-"+via.name, "geral-"+via.name
			expectStatus(t, call(t, cl, proto.Login, proto.Data{"user": alice}), proto.StatusSuccess)
			expectStatus(t, call(t, cl, proto.Login, proto.Data{"user": alice}), proto.StatusSuccess) // logging in again works
			expectStatus(t, call(t, cl, proto.Login, proto.Data{"user": bob}), proto.StatusSuccess)
			if users := strings.Join(asStrings(call(t, cl, proto.Users, nil)["users"]), ","); !strings.Contains(users, alice) || !strings.Contains(users, bob) {
				t.Fatalf("users = %s", users)
			}

			expectStatus(t, call(t, cl, proto.Channel, proto.Data{"channel": ch}), proto.StatusSuccess)
			expectError(t, call(t, cl, proto.Channel, proto.Data{"channel": ch}), "already exists")
			chs := call(t, cl, proto.Channels, nil)
			if !slices.Contains(asStrings(chs["channels"]), ch) || !slices.Contains(asStrings(chs["users"]), ch) {
				t.Fatalf("channels reply = %v", chs)
			}

			expectStatus(t, call(t, cl, proto.Publish, proto.Data{"user": alice, "channel": ch, "message": "one"}), proto.StatusOK)
			expectStatus(t, call(t, cl, proto.Publish, proto.Data{"user": bob, "channel": ch, "message": "two"}), proto.StatusOK)
			expectError(t, call(t, cl, proto.Publish, proto.Data{"user": alice, "channel": "nope", "message": "x"}), "does not exist")
			expectStatus(t, call(t, cl, proto.Message, proto.Data{"src": alice, "dst": bob, "message": "psst"}), proto.StatusOK)
			expectStatus(t, call(t, cl, proto.Message, proto.Data{"src": bob, "dst": alice, "message": "oi"}), proto.StatusOK)
			expectError(t, call(t, cl, proto.Message, proto.Data{"src": alice, "dst": "nobody", "message": "x"}), "does not exist")

			posts := messages(t, call(t, cl, proto.History, proto.Data{"channel": ch}))
			if got := texts(posts); got != "one,two" {
				t.Fatalf("channel history = %s", got)
			}
			if posts[0]["user"] != alice || posts[0]["channel"] != ch {
				t.Fatalf("post as stored = %v", posts[0])
			}
			dms := messages(t, call(t, cl, proto.History, proto.Data{"user": bob, "peer": alice}))
			if got := texts(dms); got != "psst,oi" {
				t.Fatalf("DM history = %s", got)
			}
			// Paging: the newest one before the second message's id.
			id, _, _ := proto.Data(dms[1]).Int("", "id")
			older := messages(t, call(t, cl, proto.History, proto.Data{"user": alice, "peer": bob, "before": id, "limit": 1}))
			if texts(older) != "psst" {
				t.Fatalf("page before %d = %s", id, texts(older))
			}
		})
	}
}

// TestRepliesCarryLamportClock checks the clock rule on a round trip.
func TestRepliesCarryLamportClock(t *testing.T) {
	c := startCluster(t, 1)
	cl := newClient(t, c.Servers[0].Addr())
	env := proto.Envelope{Service: proto.Users, Data: proto.Data{"clock": 1000, "timestamp": time.Now().Unix()}}
	reply, err := cl.Do(t.Context(), env.Encode())
	if err != nil {
		t.Fatal(err)
	}
	back, _ := proto.Decode(reply)
	if back.Data.Clock() <= 1000 {
		t.Fatalf("reply clock %d, want > 1000 (max(local, received)+1 then +1 to send)", back.Data.Clock())
	}
	if _, ok := back.Data.Timestamp(); !ok {
		t.Fatalf("reply has no timestamp: %v", back.Data)
	}
}

// TestRequestIDAppliesOnce retries a publish with the same request_id.
func TestRequestIDAppliesOnce(t *testing.T) {
	c := startCluster(t, 1)
	cl := newClient(t, c.Broker.FrontAddr())
	call(t, cl, proto.Channel, proto.Data{"channel": "g"})
	for range 3 {
		expectStatus(t, call(t, cl, proto.Publish, proto.Data{"user": "a", "channel": "g", "message": "once", "request_id": "r-1"}), proto.StatusOK)
	}
	// A retried create that failed the first time fails again the same way.
	expectError(t, call(t, cl, proto.Channel, proto.Data{"channel": "g", "request_id": "c-1"}), "already exists")
	expectError(t, call(t, cl, proto.Channel, proto.Data{"channel": "g", "request_id": "c-1"}), "already exists")
	if got := texts(messages(t, call(t, cl, proto.History, proto.Data{"channel": "g"}))); got != "once" {
		t.Fatalf("history = %s, want the message once", got)
	}
}

// TestBadInputGetsErrorAndSocketStaysUsable sends every kind of bad
// request on one REQ socket: each gets one erro reply, and a good request
// works after all of them.
func TestBadInputGetsErrorAndSocketStaysUsable(t *testing.T) {
	c := startCluster(t, 1)
	bad := map[string][]byte{
		"not msgpack":       {0xc1, 0x00},
		"array":             mustPack(t, []any{1, 2}),
		"no service":        mustPack(t, map[string]any{"data": map[string]any{}}),
		"service not text":  mustPack(t, map[string]any{"service": 1}),
		"data not map":      mustPack(t, map[string]any{"service": "login", "data": 3}),
		"unknown service":   mustPack(t, map[string]any{"service": "shutdown", "data": map[string]any{}}),
		"missing field":     mustPack(t, map[string]any{"service": "publish", "data": map[string]any{"user": "a"}}),
		"wrong type":        mustPack(t, map[string]any{"service": "login", "data": map[string]any{"user": 123}}),
		"name too long":     mustPack(t, map[string]any{"service": "login", "data": map[string]any{"user": strings.Repeat("n", 65)}}),
		"name with space":   mustPack(t, map[string]any{"service": "channel", "data": map[string]any{"channel": "a b"}}),
		"huge request":      mustPack(t, map[string]any{"service": "publish", "data": map[string]any{"user": "a", "channel": "g", "message": strings.Repeat("x", 200<<10)}}),
		"4 billion entries": {0xdf, 0xff, 0xff, 0xff, 0xff},
		"empty frame":       {},
	}
	for _, ep := range []string{c.Servers[0].Addr(), c.Broker.FrontAddr()} {
		cl := newClient(t, ep)
		for name, frame := range bad {
			reply, err := cl.Do(t.Context(), frame)
			if err != nil {
				t.Fatalf("%s via %s: no reply: %v", name, ep, err)
			}
			env, err := proto.Decode(reply)
			if err != nil || env.Data["status"] != proto.StatusError || env.Data["description"] == "" {
				t.Fatalf("%s via %s: reply %v (%v), want an erro with a description", name, ep, env, err)
			}
		}
		expectStatus(t, call(t, cl, proto.Login, proto.Data{"user": "fine"}), proto.StatusSuccess)
	}
}

// TestPublicationsThroughTheProxy subscribes like a client of the
// standard and checks the two-frame publications and exact topics.
func TestPublicationsThroughTheProxy(t *testing.T) {
	c := startCluster(t, 1)
	cl := newClient(t, c.Broker.FrontAddr())
	call(t, cl, proto.Login, proto.Data{"user": "bob"})
	call(t, cl, proto.Channel, proto.Data{"channel": "geral"})
	call(t, cl, proto.Channel, proto.Data{"channel": "geral2"})

	got := clustertest.Subscribe(t, c.Broker.PubOutAddr(), "geral", "bob")
	publishUntilReceived(t, got, func() {
		call(t, cl, proto.Publish, proto.Data{"user": "alice", "channel": "geral", "message": "warm-up"})
	})
	call(t, cl, proto.Publish, proto.Data{"user": "alice", "channel": "geral2", "message": "other channel"})
	call(t, cl, proto.Publish, proto.Data{"user": "alice", "channel": "geral", "message": "hello"})
	call(t, cl, proto.Message, proto.Data{"src": "alice", "dst": "bob", "message": "psst"})

	want := map[string]string{"geral": "hello", "bob": "psst"}
	seen := map[string]proto.Data{}
	timeout := time.After(5 * time.Second)
	for len(seen) < len(want) {
		select {
		case f := <-got:
			if len(f) != 2 {
				t.Fatalf("publication has %d frames: %q", len(f), f)
			}
			var d proto.Data
			if err := msgpack.Unmarshal(f[1], &d); err != nil {
				t.Fatal(err)
			}
			topic := string(f[0])
			if topic == "geral2" {
				continue // prefix-matched by ZeroMQ; a client must drop it
			}
			if d["message"] != want[topic] {
				t.Fatalf("topic %s carried %v", topic, d)
			}
			seen[topic] = d
		case <-timeout:
			t.Fatalf("publications seen: %v", seen)
		}
	}
	for _, key := range []string{"user", "message", "timestamp", "clock"} {
		if _, ok := seen["geral"][key]; !ok {
			t.Errorf("post lacks %q: %v", key, seen["geral"])
		}
	}
	for _, key := range []string{"from", "message", "timestamp", "clock"} {
		if _, ok := seen["bob"][key]; !ok {
			t.Errorf("direct message lacks %q: %v", key, seen["bob"])
		}
	}
}

func expectStatus(t *testing.T, d proto.Data, status string) {
	t.Helper()
	if d["status"] != status {
		t.Fatalf("reply %v, want status %q", d, status)
	}
}

func expectError(t *testing.T, d proto.Data, says string) {
	t.Helper()
	desc, _ := d["description"].(string)
	if d["status"] != proto.StatusError || !strings.Contains(desc, says) {
		t.Fatalf("reply %v, want erro saying %q", d, says)
	}
}

func asStrings(v any) []string {
	var out []string
	list, _ := v.([]any)
	for _, x := range list {
		out = append(out, fmt.Sprint(x))
	}
	return out
}

func messages(t *testing.T, d proto.Data) []map[string]any {
	t.Helper()
	list, ok := d["messages"].([]any)
	if !ok {
		t.Fatalf("history reply without messages: %v", d)
	}
	var out []map[string]any
	for _, m := range list {
		out = append(out, m.(map[string]any))
	}
	return out
}

func texts(msgs []map[string]any) string {
	var out []string
	for _, m := range msgs {
		out = append(out, fmt.Sprint(m["message"]))
	}
	return strings.Join(out, ",")
}

func mustPack(t *testing.T, v any) []byte {
	t.Helper()
	b, err := msgpack.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
