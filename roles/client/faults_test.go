package client

import (
	"bufio"
	"fmt"
	"io"
	"slices"
	"strings"
	"testing"

	"chat/internal/clustertest"
	"chat/internal/testnet"
	"chat/proto"
)

// Issue 9: what a careless or hostile user can do to a client.

// TestLongLineIsRefused: a line over 64 KiB used to end the session
// (bufio.Scanner: token too long), dropping every later line.
func TestLongLineIsRefused(t *testing.T) {
	var out screen
	script := strings.Repeat("x", 70_000) + "\n/help\n" + strings.Repeat("y", 1<<20) + "\n/quit\n"
	cfg := testConfig([]string{testnet.FreeEndpoint(t)}, "")
	if err := Run(t.Context(), cfg, strings.NewReader(script), &out, clustertest.Log()); err != nil {
		t.Fatal(err)
	}
	got := out.String()
	if !strings.Contains(got, "/login NAME") {
		t.Fatalf("the line after a 70,000-byte line was not run:\n%.2000s", got)
	}
	if n := strings.Count(got, fmt.Sprintf("the limit is %d bytes", maxLine)); n != 2 {
		t.Fatalf("the user was told of %d too long lines, want 2:\n%.2000s", n, got)
	}
	if strings.Contains(got, "xxxxxxxx") || strings.Contains(got, "yyyyyyyy") {
		t.Fatalf("a too long line was used:\n%.2000s", got)
	}
	t.Logf("%s", got)
}

// TestReadLine: the line reader's edges: the limit itself, line endings,
// a last line without one.
func TestReadLine(t *testing.T) {
	const max = 10
	in := "0123456789\n0123456789a\r\nab\r\n\n0123456789\r\n" + strings.Repeat("z", 100) + "\n" +
		"012345678\r\n" + "0123456789a\n" + "last"
	want := []inputLine{{text: "0123456789"}, {tooLong: 11}, {text: "ab"}, {text: ""}, {text: "0123456789"}, {tooLong: 100},
		{text: "012345678"}, {tooLong: 11}, {text: "last"}}
	for _, size := range []int{16, 17, 23, 4096} { // where the reader's buffer ends moves the edges
		r := bufio.NewReaderSize(strings.NewReader(in), size)
		var got []inputLine
		for {
			line, err := readLine(r, max)
			if err == nil || line.text != "" || line.tooLong > 0 {
				got = append(got, line)
			}
			if err != nil {
				if err != io.EOF {
					t.Fatal(err)
				}
				break
			}
		}
		if !slices.Equal(got, want) {
			t.Errorf("buffer of %d: got %+v\nwant %+v", size, got, want)
		}
	}
}

// TestInvisibleCharactersAreShown: bidirectional overrides and
// zero-width characters from other users reached the terminal as they
// were, so a message could pass for another one.
func TestInvisibleCharactersAreShown(t *testing.T) {
	hidden := []rune{0x202a, 0x202b, 0x202c, 0x202d, 0x202e, 0x2066, 0x2067, 0x2068, 0x2069,
		0x200b, 0x200c, 0x200d, 0x2060, 0xfeff, 0x200e, 0x200f, 0x061c, 0x2028, 0x2029, 0xe0041}
	for _, r := range hidden {
		s := "a" + string(r) + "b"
		for what, line := range map[string]string{
			"text":    formatPost(proto.Post{Channel: "g", User: "eve", Text: s}),
			"user":    formatPost(proto.Post{Channel: "g", User: s, Text: "hi"}),
			"channel": formatPost(proto.Post{Channel: s, User: "eve", Text: "hi"}),
			"dm from": formatDirect(proto.Direct{From: s, To: "bob", Text: "hi"}, "bob", ""),
			"dm to":   formatDirect(proto.Direct{From: "bob", To: s, Text: "hi"}, "bob", ""),
			"list":    formatList("users", []string{s}),
			"notice":  noticeLine("joined #%s", s),
		} {
			if strings.ContainsRune(line, r) {
				t.Errorf("%U in a %s reaches the terminal: %q", r, what, line)
			}
			if want := fmt.Sprintf(`a\u%04x`, r); r > 0xffff && !strings.Contains(line, fmt.Sprintf(`a\U%08x`, r)) ||
				r <= 0xffff && !strings.Contains(line, want) {
				t.Errorf("%U in a %s is not shown as an escape: %q", r, what, line)
			}
		}
	}
	// What is not hidden stays as it is.
	for _, s := range []string{"olá", "日本語", "emoji 🙂", "ﺎﻠﻋﺮﺒﻳﺓ", "עברית"} {
		if got := printable(s); got != s {
			t.Errorf("printable(%q) = %q", s, got)
		}
	}
}

// TestDirectToSelfShownOnce: a direct message to oneself was shown when
// sent and again when it came back on the user's own topic.
func TestDirectToSelfShownOnce(t *testing.T) {
	sys := startSystem(t)
	alice := startUser(t, testConfig([]string{sys.front}, sys.pubOut))
	alice.do(t, "/login alice", "logged in as alice")
	alice.do(t, "/create g", "channel #g created")
	alice.do(t, "/join g", "joined #g")
	fmt.Fprintln(alice.in, "/msg alice note to self")
	// The post comes back on the broker after the direct message: once it
	// is on the screen, so is every copy of the direct message.
	alice.do(t, "barrier", "#g <alice> barrier")
	if n := strings.Count(alice.out.String(), "note to self"); n != 1 {
		t.Fatalf("the direct message to oneself is shown %d times:\n%s", n, alice.out)
	}
	alice.do(t, "/history @alice", "*alice* note to self")
}
