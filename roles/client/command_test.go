package client

import (
	"strings"
	"testing"
)

func TestParseCommand(t *testing.T) {
	cases := []struct {
		line string
		want command
	}{
		{"", command{}},
		{"   ", command{}},
		{"hello world", command{name: "say", text: "hello world"}},
		{"  hello  ", command{name: "say", text: "hello"}},
		{"//not a command", command{name: "say", text: "/not a command"}},
		{"/login alice", command{name: "login", arg: "alice"}},
		{"/LOGIN alice", command{name: "login", arg: "alice"}},
		{"/users", command{name: "users"}},
		{"/channels", command{name: "channels"}},
		{"/create geral", command{name: "create", arg: "geral"}},
		{"/join  geral ", command{name: "join", arg: "geral"}},
		{"/leave geral", command{name: "leave", arg: "geral"}},
		{"/msg bob  hi there ", command{name: "msg", arg: "bob", text: "hi there"}},
		{"/history", command{name: "history"}},
		{"/history geral", command{name: "history", arg: "geral"}},
		{"/history @bob", command{name: "history", arg: "@bob"}},
		{"/help", command{name: "help"}},
		{"/quit", command{name: "quit"}},
	}
	for _, c := range cases {
		got, err := parseCommand(c.line)
		if err != nil || got != c.want {
			t.Errorf("parseCommand(%q) = %+v, %v; want %+v", c.line, got, err, c.want)
		}
	}
}

func TestParseCommandErrors(t *testing.T) {
	cases := []struct{ line, says string }{
		{"/nope", "unknown command /nope"},
		{"/login", "usage: /login NAME"},
		{"/login a b", "usage: /login NAME"},
		{"/join", "usage: /join CH"},
		{"/users x", "usage: /users"},
		{"/msg bob", "usage: /msg USER TEXT"},
		{"/msg", "usage: /msg USER TEXT"},
		{"/history a b", "usage: /history"},
	}
	for _, c := range cases {
		_, err := parseCommand(c.line)
		if err == nil || !strings.Contains(err.Error(), c.says) {
			t.Errorf("parseCommand(%q) error = %v, want one saying %q", c.line, err, c.says)
		}
	}
}

func TestHelpListsEveryCommand(t *testing.T) {
	help := strings.Join(helpLines(), "\n")
	for _, c := range commands {
		if !strings.Contains(help, c.usage) {
			t.Errorf("help does not mention %s", c.usage)
		}
	}
}
