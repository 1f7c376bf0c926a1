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

// ParseRequest decodes and validates a client request frame. Every problem
// is an *Error whose description says what to fix.
func ParseRequest(frame []byte, lim Limits) (Request, error) {
	if lim.MaxRequest > 0 && len(frame) > lim.MaxRequest {
		return Request{}, Errorf(ErrorService, "request is %d bytes, the limit is %d", len(frame), lim.MaxRequest)
	}
	env, err := Decode(frame)
	if err != nil {
		return Request{}, err
	}
	return ParseEnvelope(env, lim)
}

// ParseEnvelope validates a decoded envelope as a client request.
func ParseEnvelope(env Envelope, lim Limits) (Request, error) {
	svc, d := env.Service, env.Data
	r := Request{Service: svc, Clock: d.Clock()}
	r.Timestamp, _ = d.Timestamp()
	var err error
	if r.RequestID, _, err = d.String(svc, "request_id"); err != nil {
		return r, err
	}
	if len(r.RequestID) > 128 {
		return r, Errorf(svc, "field \"request_id\" is longer than 128 bytes")
	}
	p := fieldParser{svc: svc, d: d, lim: lim}
	switch svc {
	case Login:
		r.User = p.name("user")
	case Users, Channels:
	case Channel:
		r.Channel = p.name("channel")
	case Publish:
		r.User = p.name("user")
		r.Channel = p.name("channel")
		r.Text = p.text("message")
	case Message:
		r.Src = p.name("src")
		r.Dst = p.name("dst")
		r.Text = p.text("message")
	case History:
		if _, has := d["channel"]; has {
			r.Channel = p.name("channel")
		} else {
			r.User = p.name("user")
			r.Peer = p.name("peer")
		}
		r.Limit = p.limit()
		r.Before = p.optionalInt("before")
	default:
		return r, Errorf(svc, "unknown service %q", svc)
	}
	return r, p.err
}

// fieldParser reads fields one by one and keeps the first error, so a
// service's parse reads as a list of its fields.
type fieldParser struct {
	svc string
	d   Data
	lim Limits
	err error
}

func (p *fieldParser) fail(format string, args ...any) {
	if p.err == nil {
		p.err = Errorf(p.svc, format, args...)
	}
}

func (p *fieldParser) required(key string) string {
	s, ok, err := p.d.String(p.svc, key)
	switch {
	case err != nil:
		if p.err == nil {
			p.err = err
		}
	case !ok:
		p.fail("field %q is required", key)
	}
	return s
}

func (p *fieldParser) name(key string) string {
	s := p.required(key)
	if p.err == nil {
		if err := ValidName(s, p.lim.MaxName); err != nil {
			p.fail("field %q: %v", key, err)
		}
	}
	return s
}

func (p *fieldParser) text(key string) string {
	s := p.required(key)
	switch {
	case p.err != nil:
	case s == "":
		p.fail("field %q is empty", key)
	case p.lim.MaxMessage > 0 && len(s) > p.lim.MaxMessage:
		p.fail("field %q is %d bytes, the limit is %d", key, len(s), p.lim.MaxMessage)
	case !utf8.ValidString(s):
		p.fail("field %q is not valid UTF-8", key)
	}
	return s
}

func (p *fieldParser) optionalInt(key string) int64 {
	n, _, err := p.d.Int(p.svc, key)
	if err != nil && p.err == nil {
		p.err = err
	}
	if n < 0 {
		p.fail("field %q must not be negative", key)
	}
	return n
}

func (p *fieldParser) limit() int {
	n := p.optionalInt("limit")
	switch {
	case n == 0:
		return p.lim.DefaultHistory
	case n > int64(p.lim.MaxHistoryLimit):
		p.fail("field \"limit\" is %d, the largest allowed is %d", n, p.lim.MaxHistoryLimit)
		return 0
	}
	return int(n)
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
