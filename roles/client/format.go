package client

import (
	"fmt"
	"strings"
	"time"
	"unicode"

	"chat/proto"
)

// formatPost renders a channel post: "[15:04:05] #geral <alice> hello",
// or "[15:04:05] #geral * alice waves" for an action (/me).
func formatPost(p proto.Post) string {
	if isAction(p.User, p.Text) {
		return fmt.Sprintf("[%s] #%s %s", localTime(p.Timestamp), printable(p.Channel), printable(p.Text))
	}
	return fmt.Sprintf("[%s] #%s <%s> %s", localTime(p.Timestamp), printable(p.Channel), printable(p.User), printable(p.Text))
}

// formatDirect renders a direct message: "[15:04:05] [private] *alice*
// hello" when it was sent to me, "[15:04:05] [private] -> *bob* hello"
// when I sent it. mark says whether it is private (see private.go); it
// comes before the names, where a message text cannot imitate it, and ""
// leaves it out. m.Text is the text to show ("" for none).
func formatDirect(m proto.Direct, me, mark string) string {
	at := "[" + localTime(m.Timestamp) + "] "
	if mark != "" {
		at += "[" + mark + "] "
	}
	var line string
	if me != "" && m.From == me && m.To != me {
		line = fmt.Sprintf("%s-> *%s* %s", at, printable(m.To), printable(m.Text))
	} else {
		line = fmt.Sprintf("%s*%s* %s", at, printable(m.From), printable(m.Text))
	}
	return strings.TrimSuffix(line, " ")
}

// formatList renders a list reply: "channels (2): a, b".
func formatList(what string, names []string) string {
	if len(names) == 0 {
		return fmt.Sprintf("no %s yet", what)
	}
	return fmt.Sprintf("%s (%d): %s", what, len(names), printable(strings.Join(names, ", ")))
}

// localTime formats when a message was sent, as the local wall clock. A
// message without a timestamp is shown with the time it is shown at.
func localTime(t time.Time) string {
	if t.IsZero() {
		t = time.Now()
	}
	return t.Local().Format("15:04:05")
}

// printable makes s safe to show on a terminal: a control character
// (newline, escape...) becomes a space, so that a message can neither
// break a line nor drive the terminal, and a character that shows as
// nothing or reorders the text around it becomes a visible escape such as
// \u202e, so that a message, a user name or a channel name cannot pass
// for another. Those are the format characters (Unicode category Cf: the
// bidirectional controls U+202A–U+202E and U+2066–U+2069, the marks
// U+200E, U+200F and U+061C, the zero-width U+200B–U+200D, U+2060 and
// U+FEFF, the soft hyphen, the tag characters...), the line and paragraph
// separators U+2028 and U+2029, and the blank Hangul fillers.
func printable(s string) string {
	if !strings.ContainsFunc(s, func(r rune) bool { return unicode.IsControl(r) || hidden(r) }) {
		return s
	}
	var b strings.Builder
	for _, r := range s {
		switch {
		case unicode.IsControl(r):
			b.WriteByte(' ')
		case hidden(r) && r > 0xffff:
			fmt.Fprintf(&b, `\U%08x`, r)
		case hidden(r):
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

// hidden reports whether r shows as nothing, or changes how the text
// around it is shown, on a terminal.
func hidden(r rune) bool {
	switch r {
	case '\u2028', '\u2029', '\u115f', '\u1160', '\u3164', '\uffa0':
		return true
	}
	return unicode.Is(unicode.Cf, r)
}

// historyLines renders the "messages" list of a history reply, oldest
// first. Each message is as published on the bus; a post without its
// channel field belongs to channel, and direct renders a direct message.
func historyLines(d proto.Data, channel string, direct func(proto.Direct) string) []string {
	items, _ := d["messages"].([]any)
	lines := make([]string, 0, len(items))
	for _, it := range items {
		if m, ok := it.(map[string]any); ok {
			lines = append(lines, historyLine(m, channel, direct))
		}
	}
	return lines
}

// actionText is the text of the post /me ACTION sends as user: "* alice
// waves". It reads as an action on any client, and ours shows it without
// the "<alice>" in front.
func actionText(user, action string) string {
	return "* " + user + " " + action
}

// isAction reports whether a post of user is an action.
func isAction(user, text string) bool {
	return user != "" && strings.HasPrefix(text, "* "+user+" ")
}

// historyPosts returns the channel posts of a history reply, oldest first
// (a post without its channel field belongs to channel).
func historyPosts(d proto.Data, channel string) []proto.Post {
	items, _ := d["messages"].([]any)
	posts := make([]proto.Post, 0, len(items))
	for _, it := range items {
		m, ok := it.(map[string]any)
		if !ok {
			continue
		}
		if _, ok, _ := proto.Data(m).String("", "from"); ok {
			continue // a direct message
		}
		posts = append(posts, historyPost(m, channel))
	}
	return posts
}

// historyPost reads one post of a history reply.
func historyPost(d proto.Data, channel string) proto.Post {
	ts, _ := d.Timestamp()
	id, _, _ := d.Int("", "id")
	text, _, _ := d.String("", "message")
	user, _, _ := d.String("", "user")
	if ch, _, _ := d.String("", "channel"); ch != "" {
		channel = ch
	}
	return proto.Post{ID: id, Channel: channel, User: user, Text: text, Timestamp: ts}
}

func historyLine(d proto.Data, channel string, direct func(proto.Direct) string) string {
	ts, _ := d.Timestamp()
	text, _, _ := d.String("", "message")
	if from, ok, _ := d.String("", "from"); ok {
		to, _, _ := d.String("", "to")
		return direct(proto.Direct{From: from, To: to, Text: text, Timestamp: ts})
	}
	return formatPost(historyPost(d, channel))
}
