package proto

import (
	"strings"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"
)

func frame(t testing.TB, v any) []byte {
	t.Helper()
	b, err := msgpack.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func req(service string, data map[string]any) map[string]any {
	return map[string]any{"service": service, "data": data}
}

func TestParseValidRequests(t *testing.T) {
	lim := DefaultLimits()
	cases := []struct {
		in   map[string]any
		want Request
	}{
		{req("login", map[string]any{"user": "alice", "timestamp": 1700000000, "clock": 3}),
			Request{Service: Login, User: "alice", Clock: 3, Timestamp: time.Unix(1700000000, 0)}},
		{req("users", nil), Request{Service: Users}},
		{req("channel", map[string]any{"channel": "geral"}), Request{Service: Channel, Channel: "geral"}},
		{req("publish", map[string]any{"user": "a", "channel": "geral", "message": "oi", "request_id": "r1"}),
			Request{Service: Publish, User: "a", Channel: "geral", Text: "oi", RequestID: "r1"}},
		{req("message", map[string]any{"src": "a", "dst": "b", "message": "oi"}),
			Request{Service: Message, Src: "a", Dst: "b", Text: "oi"}},
		{req("history", map[string]any{"channel": "geral", "limit": 10, "before": 99}),
			Request{Service: History, Channel: "geral", Limit: 10, Before: 99}},
		{req("history", map[string]any{"user": "a", "peer": "b"}),
			Request{Service: History, User: "a", Peer: "b", Limit: lim.DefaultHistory}},
		{req("login", map[string]any{"user": "alice", "timestamp": "2023-11-14T22:13:20Z"}),
			Request{Service: Login, User: "alice", Timestamp: time.Unix(1700000000, 0)}},
		{req("login", map[string]any{"user": "alice", "timestamp": 1700000000.5}),
			Request{Service: Login, User: "alice", Timestamp: time.Unix(1700000000, 5e8)}},
	}
	for _, c := range cases {
		got, err := ParseRequest(frame(t, c.in), lim)
		if err != nil {
			t.Errorf("%v: %v", c.in, err)
			continue
		}
		if !got.Timestamp.Equal(c.want.Timestamp) {
			t.Errorf("%v: timestamp %v, want %v", c.in, got.Timestamp, c.want.Timestamp)
		}
		got.Timestamp, c.want.Timestamp = time.Time{}, time.Time{}
		if got != c.want {
			t.Errorf("%v:\n got %+v\nwant %+v", c.in, got, c.want)
		}
	}
}

func TestParseRejectsBadInput(t *testing.T) {
	lim := DefaultLimits()
	long := strings.Repeat("x", 65)
	cases := []struct {
		name    string
		frame   []byte
		service string // service of the error reply
		says    string // part of the description
	}{
		{"not msgpack", []byte{0xc1}, ErrorService, "not valid MessagePack"},
		{"map declaring 4 billion entries", []byte{0xdf, 0xff, 0xff, 0xff, 0xff}, ErrorService, "truncated"},
		{"trailing bytes", append(frame(t, req("users", nil)), 0x01), ErrorService, "after the end"},
		{"not a map", frame(t, []int{1, 2}), ErrorService, "must be a MessagePack map"},
		{"service not string", frame(t, map[string]any{"service": 5}), ErrorService, "\"service\" must be a string"},
		{"data not map", frame(t, map[string]any{"service": "login", "data": "x"}), "login", "\"data\" must be a map"},
		{"unknown service", frame(t, req("nope", nil)), "nope", "unknown service"},
		{"missing user", frame(t, req("login", nil)), "login", "\"user\" is required"},
		{"user wrong type", frame(t, req("login", map[string]any{"user": 7})), "login", "must be a string"},
		{"name too long", frame(t, req("login", map[string]any{"user": long})), "login", "limit is 64"},
		{"name with space", frame(t, req("channel", map[string]any{"channel": "a b"})), "channel", "whitespace"},
		{"empty name", frame(t, req("channel", map[string]any{"channel": ""})), "channel", "empty"},
		{"control char", frame(t, req("login", map[string]any{"user": "a\x01"})), "login", "control"},
		{"missing message", frame(t, req("publish", map[string]any{"user": "a", "channel": "c"})), "publish", "\"message\" is required"},
		{"huge message", frame(t, req("publish", map[string]any{"user": "a", "channel": "c", "message": strings.Repeat("x", 5000)})), "publish", "limit is 4096"},
		{"huge request", make([]byte, lim.MaxRequest+1), ErrorService, "the limit is"},
		{"limit wrong type", frame(t, req("history", map[string]any{"channel": "c", "limit": "x"})), "history", "must be an integer"},
	}
	for _, c := range cases {
		_, err := ParseRequest(c.frame, lim)
		if err == nil {
			t.Errorf("%s: accepted", c.name)
			continue
		}
		reply := ReplyFor("", err)
		if reply.Service != c.service {
			t.Errorf("%s: reply service %q, want %q", c.name, reply.Service, c.service)
		}
		if reply.Data["status"] != StatusError || !strings.Contains(reply.Data["description"].(string), c.says) {
			t.Errorf("%s: reply %v, want erro saying %q", c.name, reply.Data, c.says)
		}
	}
}

func TestUnknownFieldsAndMissingClockAreAccepted(t *testing.T) {
	r, err := ParseRequest(frame(t, req("login", map[string]any{"user": "a", "color": "blue"})), DefaultLimits())
	if err != nil || r.Clock != 0 {
		t.Fatalf("got %+v, %v", r, err)
	}
}

func TestPublicationRoundTrip(t *testing.T) {
	ts := time.Unix(1700000000, 0)
	p := PostPublication(Post{ID: 7, Channel: "geral", User: "alice", Text: "oi", Timestamp: ts, Clock: 9})
	got, err := DecodePublication(p.Frames())
	if err != nil || got.Post == nil {
		t.Fatalf("decode post: %+v %v", got, err)
	}
	if *got.Post != (Post{ID: 7, Channel: "geral", User: "alice", Text: "oi", Timestamp: ts, Clock: 9}) {
		t.Fatalf("post = %+v", *got.Post)
	}
	d := DirectPublication(Direct{ID: 8, From: "alice", To: "bob", Text: "psst", Timestamp: ts, Clock: 10})
	if d.Topic != "bob" {
		t.Fatalf("direct topic = %q", d.Topic)
	}
	got, err = DecodePublication(d.Frames())
	if err != nil || got.Direct == nil || got.Direct.From != "alice" || got.Direct.To != "bob" || got.Clock != 10 {
		t.Fatalf("decode direct: %+v %v", got, err)
	}
	// A post in the standard's form (no extension fields) takes its channel from the topic.
	std := frame(t, map[string]any{"user": "bob", "message": "hi", "timestamp": 1700000000, "clock": 1})
	got, err = DecodePublication([][]byte{[]byte("geral"), std})
	if err != nil || got.Post == nil || got.Post.Channel != "geral" {
		t.Fatalf("standard post: %+v %v", got, err)
	}
}

func TestStampAndEncode(t *testing.T) {
	env := Envelope{Service: Login, Data: Data{"status": StatusSuccess}}.Stamp(time.Unix(5, 0), 42)
	back, err := Decode(env.Encode())
	if err != nil {
		t.Fatal(err)
	}
	if back.Data.Clock() != 42 || back.Data["status"] != StatusSuccess {
		t.Fatalf("round trip = %+v", back)
	}
}

func FuzzParseRequest(f *testing.F) {
	f.Add(frame(f, req("login", map[string]any{"user": "alice"})))
	f.Add(frame(f, req("publish", map[string]any{"user": "a", "channel": "c", "message": "m", "timestamp": 1.5})))
	f.Add(frame(f, req("history", map[string]any{"user": "a", "peer": "b", "limit": 3})))
	f.Add([]byte{0xdf, 0xff, 0xff, 0xff, 0xff})
	f.Add([]byte{0xdd, 0xff, 0xff, 0xff, 0xff})
	lim := DefaultLimits()
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := ParseRequest(b, lim)
		if err != nil {
			reply := ReplyFor(r.Service, err)
			if reply.Data["status"] != StatusError {
				t.Fatalf("error reply without erro status: %v", reply)
			}
			_ = reply.Encode()
			return
		}
		if r.Service == "" {
			t.Fatalf("accepted request without service")
		}
		// The fast reader and the general one agree on the service of a
		// frame both accept. (Decode may refuse what ParseRequest rightly
		// ignores: an extension type in an unknown field.)
		if env, err := Decode(b); err == nil && env.Service != r.Service {
			t.Fatalf("ParseRequest accepted %x as %q; Decode says %q", b, r.Service, env.Service)
		}
	})
}

// Issue 9: a history limit above the largest allowed is capped (as IRC's
// CHATHISTORY does), not refused; the reply then holds what fits.
func TestHistoryLimitAboveMaxIsCapped(t *testing.T) {
	lim := DefaultLimits()
	for _, n := range []any{lim.MaxHistoryLimit + 1, 100000, int64(1) << 40, float64(1e6)} {
		r, err := ParseRequest(frame(t, req("history", map[string]any{"channel": "c", "limit": n})), lim)
		if err != nil {
			t.Errorf("limit %v: %v", n, err)
			continue
		}
		if r.Limit != lim.MaxHistoryLimit {
			t.Errorf("limit %v parsed as %d, want the cap %d", n, r.Limit, lim.MaxHistoryLimit)
		}
	}
	// Still refused: a negative limit, and one that is not a number.
	for _, n := range []any{-1, "x"} {
		if _, err := ParseRequest(frame(t, req("history", map[string]any{"channel": "c", "limit": n})), lim); err == nil {
			t.Errorf("limit %v accepted", n)
		}
	}
}

func TestLimitsValidate(t *testing.T) {
	if err := DefaultLimits().Validate(); err != nil {
		t.Fatal(err)
	}
	for name, edit := range map[string]func(*Limits){
		"reply too small for one message": func(l *Limits) { l.MaxReply = l.MaxMessage },
		"default page over the largest":   func(l *Limits) { l.DefaultHistory = l.MaxHistoryLimit + 1 },
		"empty largest page":              func(l *Limits) { l.MaxHistoryLimit = 0 },
	} {
		l := DefaultLimits()
		edit(&l)
		if l.Validate() == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
