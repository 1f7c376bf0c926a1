package client

import (
	"testing"
	"time"

	"chat/proto"
)

func TestFormat(t *testing.T) {
	ts := time.Unix(1700000000, 0)
	at := "[" + ts.Local().Format("15:04:05") + "] "
	cases := []struct{ got, want string }{
		{formatPost(proto.Post{Channel: "geral", User: "alice", Text: "hello", Timestamp: ts}), at + "#geral <alice> hello"},
		{formatDirect(proto.Direct{From: "alice", To: "bob", Text: "psst", Timestamp: ts}, "", ""), at + "*alice* psst"},
		{formatDirect(proto.Direct{From: "alice", To: "bob", Text: "psst", Timestamp: ts}, "bob", ""), at + "*alice* psst"},
		{formatDirect(proto.Direct{From: "alice", To: "bob", Text: "psst", Timestamp: ts}, "alice", ""), at + "-> *bob* psst"},
		{formatDirect(proto.Direct{From: "alice", To: "bob", Text: "psst", Timestamp: ts}, "bob", "private"), at + "[private] *alice* psst"},
		{formatDirect(proto.Direct{From: "alice", To: "bob", Timestamp: ts}, "bob", "private: log in with your password to read it"), at + "[private: log in with your password to read it] *alice*"},
		{formatPost(proto.Post{Channel: "g", User: "eve", Text: "a\nb\x1b[2J", Timestamp: ts}), at + "#g <eve> a b [2J"},
		{formatList("channels", []string{"a", "b"}), "channels (2): a, b"},
		{formatList("users", nil), "no users yet"},
	}
	for _, c := range cases {
		if c.got != c.want {
			t.Errorf("got  %q\nwant %q", c.got, c.want)
		}
	}
}

func TestHistoryLines(t *testing.T) {
	ts := time.Unix(1700000000, 0)
	at := "[" + ts.Local().Format("15:04:05") + "] "
	reply := proto.Data{"messages": []any{
		map[string]any{"user": "alice", "message": "one", "timestamp": int64(1700000000), "id": int64(1)}, // standard form: no channel
		map[string]any{"user": "bob", "message": "two", "timestamp": int64(1700000000), "channel": "geral"},
		map[string]any{"from": "bob", "to": "alice", "message": "dm", "timestamp": int64(1700000000)},
		map[string]any{"from": "alice", "to": "bob", "message": "re", "timestamp": int64(1700000000)},
		"not a message",
	}}
	got := historyLines(reply, "geral", func(m proto.Direct) string { return formatDirect(m, "alice", "not private") })
	want := []string{at + "#geral <alice> one", at + "#geral <bob> two", at + "[not private] *bob* dm", at + "[not private] -> *bob* re"}
	if len(got) != len(want) {
		t.Fatalf("got %q, want %q", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("line %d: got %q, want %q", i, got[i], want[i])
		}
	}
}

func TestReplyError(t *testing.T) {
	e := replyError("publish", proto.Data{"status": "erro", "message": "channel \"x\" does not exist"})
	if e.Text != `channel "x" does not exist` || e.Retry {
		t.Errorf("publish error = %+v", e)
	}
	e = replyError("users", proto.Data{"status": "erro", "description": "no server is available", "retry": true})
	if e.Text != "no server is available" || !e.Retry {
		t.Errorf("broker error = %+v", e)
	}
	if e = replyError("login", proto.Data{"status": "erro"}); e.Text == "" {
		t.Errorf("an error without text must still say something")
	}
}

func TestReplyList(t *testing.T) {
	d := proto.Data{"users": []any{"a", 5, "b"}}
	got := ReplyList(d, "channels", "users")
	if len(got) != 2 || got[0] != "a" || got[1] != "b" {
		t.Errorf("ReplyList = %q", got)
	}
	if ReplyList(proto.Data{}, "channels") != nil {
		t.Errorf("missing list must be nil")
	}
}
