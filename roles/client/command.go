package client

import (
	"fmt"
	"strings"
)

// command is one parsed input line.
type command struct {
	name string // "login", "join"... as typed without the slash; "say" for plain text; "" for a blank line
	arg  string // the name the command takes (user, channel, or @user for /history)
	text string // message text ("say", "msg", "me")

	// password is the password typed at the prompt of a /login on a
	// terminal ("" : an open login); asked says that it was asked for,
	// cancelled that Ctrl-C was typed at the prompt.
	password         string
	asked, cancelled bool
}

// argKind says which arguments a command takes.
type argKind int

const (
	noArgs      argKind = iota
	oneName             // /join CH
	optionalArg         // /history [CH]
	nameAndText         // /msg USER TEXT
	textOnly            // /me TEXT
)

// commandSpec describes one slash command for the parser and for /help.
type commandSpec struct {
	name  string
	args  argKind
	usage string
	help  string
}

// commands lists the slash commands in the order /help shows them.
var commands = []commandSpec{
	{"login", oneName, "/login NAME", "log in as NAME; a terminal asks its password (empty: no account)"},
	{"logout", noArgs, "/logout", "log out (ends the session's token on every server)"},
	{"users", noArgs, "/users", "list the users"},
	{"channels", noArgs, "/channels", "list the channels"},
	{"create", oneName, "/create CH", "create channel CH"},
	{"join", oneName, "/join CH", "join CH (creating it if needed), show its recent messages, make it current"},
	{"leave", optionalArg, "/leave [CH]", "stop receiving CH (default: the current channel)"},
	{"window", optionalArg, "/window [CH | N]", "switch to joined channel CH (or the Nth); alone: list them"},
	{"msg", nameAndText, "/msg USER TEXT", "direct message: [private] if USER has a key, else [not private]"},
	{"whois", oneName, "/whois USER", "USER's account and key fingerprint (to compare with USER)"},
	{"me", textOnly, "/me ACTION", "post an action: /me waves shows as * alice waves"},
	{"history", optionalArg, "/history [CH | @USER]", "messages of CH (default: current) or of your conversation with USER"},
	{"whoami", noArgs, "/whoami", "who you are, the server and the current channel"},
	{"help", noArgs, "/help", "show this help"},
	{"quit", noArgs, "/quit", "leave the client"},
}

// parseCommand parses one input line. Text that does not start with "/"
// is "say"; "//" escapes a leading slash. A wrong command or a missing
// argument is an error that tells the usage.
func parseCommand(line string) (command, error) {
	line = strings.TrimSpace(line)
	switch {
	case line == "":
		return command{}, nil
	case strings.HasPrefix(line, "//"):
		return command{name: "say", text: line[1:]}, nil
	case !strings.HasPrefix(line, "/"):
		return command{name: "say", text: line}, nil
	}
	word, rest, _ := strings.Cut(line[1:], " ")
	spec, ok := lookup(strings.ToLower(word))
	if !ok {
		return command{}, fmt.Errorf("unknown command /%s (try /help)", word)
	}
	cmd := command{name: spec.name}
	fields := strings.Fields(rest)
	switch spec.args {
	case noArgs:
		if len(fields) != 0 {
			return command{}, fmt.Errorf("usage: %s", spec.usage)
		}
	case oneName:
		if len(fields) != 1 {
			return command{}, fmt.Errorf("usage: %s", spec.usage)
		}
		cmd.arg = fields[0]
	case optionalArg:
		if len(fields) > 1 {
			return command{}, fmt.Errorf("usage: %s", spec.usage)
		}
		if len(fields) == 1 {
			cmd.arg = fields[0]
		}
	case nameAndText:
		name, text, _ := strings.Cut(strings.TrimSpace(rest), " ")
		text = strings.TrimSpace(text)
		if name == "" || text == "" {
			return command{}, fmt.Errorf("usage: %s", spec.usage)
		}
		cmd.arg, cmd.text = name, text
	case textOnly:
		cmd.text = strings.TrimSpace(rest)
		if cmd.text == "" {
			return command{}, fmt.Errorf("usage: %s", spec.usage)
		}
	}
	return cmd, nil
}

func lookup(name string) (commandSpec, bool) {
	for _, c := range commands {
		if c.name == name {
			return c, true
		}
	}
	return commandSpec{}, false
}

// helpLines returns the /help listing, one command a line.
func helpLines() []string {
	lines := make([]string, 0, len(commands)+1)
	for _, c := range commands {
		lines = append(lines, fmt.Sprintf("  %-22s %s", c.usage, c.help))
	}
	return append(lines, fmt.Sprintf("  %-22s %s", "anything else", "post to the current channel (the last one joined or /window)"))
}
