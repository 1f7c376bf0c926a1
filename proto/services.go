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
)

// Limits bounds what a request may carry. They are configuration: every
// role takes them from its config, DefaultLimits gives the values of the
// standard (names up to 64 characters).
type Limits struct {
	MaxName         int // characters in a user or channel name
	MaxMessage      int // bytes of message text
	MaxRequest      int // bytes of one request frame
	DefaultHistory  int // messages a history request returns when it names no limit
	MaxHistoryLimit int // the largest limit a history request may ask for
}

// DefaultLimits returns the limits used unless configured otherwise.
func DefaultLimits() Limits {
	return Limits{MaxName: 64, MaxMessage: 4096, MaxRequest: 64 << 10, DefaultHistory: 50, MaxHistoryLimit: 500}
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
