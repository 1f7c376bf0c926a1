package proto

import (
	"fmt"
	"time"
	"unicode"
	"unicode/utf8"
)

// Client-facing services of the standard, plus the history extension.
const (
	Login    = "login"
	Users    = "users"
	Channel  = "channel"
	Channels = "channels"
	Publish  = "publish"
	Message  = "message"
	History  = "history"
	// Accounts extension (see docs/PROTOCOL.md, "Accounts").
	Logout = "logout"
	Whois  = "whois"
)

// Limits bounds what a request may carry. They are configuration: every
// role takes them from its config, DefaultLimits gives the values of the
// standard (names up to 64 characters).
type Limits struct {
	MaxName         int // characters in a user or channel name
	MaxMessage      int // bytes of message text
	MaxRequest      int // bytes of one request frame
	DefaultHistory  int // messages a history request returns when it names no limit
	MaxHistoryLimit int // the largest page a history request gets; a larger limit is capped to it
	// MaxReply bounds one reply frame to a client service, in bytes: a
	// history page stops before it (and says "more": true), and so do
	// the users and channels lists. Every hop a reply crosses (the
	// broker's back end and front, a client) must accept frames of this
	// size plus routing; 0 means no bound.
	MaxReply int
	// MaxSecret bounds a password or a token, in bytes (accounts).
	MaxSecret int
}

// ReplyOverhead is room a reply needs besides its list of messages or
// names: the envelope, status, more, timestamp and clock.
const ReplyOverhead = 256

// DefaultLimits returns the limits used unless configured otherwise.
func DefaultLimits() Limits {
	return Limits{MaxName: 64, MaxMessage: 4096, MaxRequest: 64 << 10, DefaultHistory: 50, MaxHistoryLimit: 500, MaxReply: 512 << 10, MaxSecret: 1024}
}

// LargestMessage is the most bytes one stored message takes in a history
// reply: its text, two names of MaxName characters of up to 4 bytes, and
// the fields around them. 0 when MaxMessage is unbounded.
func (l Limits) LargestMessage() int {
	if l.MaxMessage <= 0 {
		return 0
	}
	return l.MaxMessage + 2*4*l.MaxName + 128
}

// Validate reports limits that cannot work.
func (l Limits) Validate() error {
	switch {
	case l.MaxName < 0 || l.MaxMessage < 0 || l.MaxRequest < 0 || l.MaxReply < 0:
		return fmt.Errorf("proto: limits must not be negative")
	case l.MaxHistoryLimit < 1:
		return fmt.Errorf("proto: the largest history page must hold at least 1 message")
	case l.DefaultHistory < 1 || l.DefaultHistory > l.MaxHistoryLimit:
		return fmt.Errorf("proto: the default history page (%d) must be between 1 and the largest (%d)", l.DefaultHistory, l.MaxHistoryLimit)
	case l.MaxReply > 0 && l.LargestMessage() > 0 && l.MaxReply < ReplyOverhead+l.LargestMessage():
		return fmt.Errorf("proto: a reply of at most %d bytes cannot hold one message of %d bytes of text; allow at least %d",
			l.MaxReply, l.MaxMessage, ReplyOverhead+l.LargestMessage())
	}
	return nil
}

// Request is a parsed and validated client request. Only the fields its
// service uses are set.
type Request struct {
	Service   string
	RequestID string    // extension: de-duplication key chosen by the client
	Clock     uint64    // sender's Lamport clock (0 when absent)
	Timestamp time.Time // sender's time; zero when absent

	User    string // login, publish; history of a DM conversation
	Channel string // channel, publish; history of a channel
	Text    string // publish, message: the message text
	Src     string // message: sender
	Dst     string // message: recipient
	Peer    string // history of a DM conversation: the other user
	Limit   int    // history: how many messages (0: default)
	Before  int64  // history: only messages with a smaller id (0: newest)

	// Accounts extension.
	Password  string // login: the name's password ("" : none)
	PublicKey string // login: standard base64 of a 32-byte X25519 public key ("" : none)
	Token     string // publish, message, history, logout: the login's token ("" : none)
}

// Author returns the user a request speaks for ("" when it speaks for no
// one): the scope of its request_id.
func (r Request) Author() string {
	if r.Src != "" {
		return r.Src
	}
	return r.User
}

// validText checks message text: not empty, at most max bytes, UTF-8. It
// returns what is wrong ("" when nothing), to follow the field's name.
func validText(s string, max int) string {
	switch {
	case s == "":
		return "is empty"
	case max > 0 && len(s) > max:
		return fmt.Sprintf("is %d bytes, the limit is %d", len(s), max)
	case !utf8.ValidString(s):
		return "is not valid UTF-8"
	}
	return ""
}

// ValidName checks a user or channel name: 1 to max characters, no
// whitespace or control characters.
func ValidName(s string, max int) error {
	if s == "" {
		return fmt.Errorf("name is empty")
	}
	if !utf8.ValidString(s) {
		return fmt.Errorf("name is not valid UTF-8")
	}
	if n := utf8.RuneCountInString(s); max > 0 && n > max {
		return fmt.Errorf("name has %d characters, the limit is %d", n, max)
	}
	for _, c := range s {
		if unicode.IsSpace(c) || unicode.IsControl(c) {
			return fmt.Errorf("name %q contains whitespace or a control character", s)
		}
	}
	return nil
}
