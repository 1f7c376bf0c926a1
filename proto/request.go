package proto

import (
	"encoding/binary"
	"math"
	"strconv"
	"strings"
	"time"
	"unsafe"

	"chat/privatedm"
)

// ParseRequest decodes and validates a client request frame. Every problem
// is an *Error whose description says what to fix.
//
// It reads the MessagePack bytes directly instead of decoding them into
// maps of interface values: requests are the hot path of every server, and
// this way a request costs a handful of small allocations (its strings)
// instead of a map and a boxed value per field. Decode is the general,
// slower reader used for everything else.
func ParseRequest(frame []byte, lim Limits) (Request, error) {
	if lim.MaxRequest > 0 && len(frame) > lim.MaxRequest {
		return Request{}, Errorf(ErrorService, "request is %d bytes, the limit is %d", len(frame), lim.MaxRequest)
	}
	if err := wellFormed(frame); err != nil {
		return Request{}, Errorf(ErrorService, "request is not valid MessagePack: %v", err)
	}
	// The map's keys may come in any order: find service and data first.
	var service, data []byte
	ok, stringKeys := eachEntry(frame, func(key string, value []byte) {
		switch key {
		case "service":
			service = value
		case "data":
			data = value
		}
	})
	if !ok {
		return Request{}, Errorf(ErrorService, "request must be a MessagePack map {service, data}, got %s", rawTypeName(frame))
	}
	if !stringKeys {
		return Request{}, Errorf(ErrorService, "request map keys must be strings")
	}
	svc, isString := rawString(service)
	if !isString {
		return Request{}, Errorf(ErrorService, "field \"service\" must be a string, got %s", rawTypeName(service))
	}
	r := Request{Service: strings.Clone(svc)}
	var f rawFields
	if data != nil && data[0] != 0xc0 { // absent or nil data is an empty map
		ok, stringKeys := eachEntry(data, f.set)
		if !ok {
			return r, Errorf(r.Service, "field \"data\" must be a map, got %s", rawTypeName(data))
		}
		if !stringKeys {
			return r, Errorf(r.Service, "field \"data\" must be a map with string keys")
		}
	}
	return f.request(r, lim)
}

// eachEntry calls fn for every entry of the MessagePack map m (checked by
// wellFormed) whose key is a string. isMap is false when m is not a map;
// stringKeys is false when some key is not a string.
func eachEntry(m []byte, fn func(key string, value []byte)) (isMap, stringKeys bool) {
	n, rest, isMap := mapHeader(m)
	if !isMap {
		return false, false
	}
	stringKeys = true
	for range n {
		var key, value []byte
		key, rest = nextValue(rest)
		value, rest = nextValue(rest)
		if k, ok := rawString(key); ok {
			fn(k, value)
		} else {
			stringKeys = false
		}
	}
	return true, stringKeys
}

// rawFields holds the raw MessagePack values of the data fields a request
// may use; nil when absent. Unknown fields are ignored.
type rawFields struct {
	user, channel, message, src, dst, peer, requestID, timestamp, clock, limit, before []byte
	password, publicKey, token                                                         []byte
}

func (f *rawFields) set(key string, value []byte) {
	if value[0] == 0xc0 {
		value = nil // nil counts as absent
	}
	switch key {
	case "user":
		f.user = value
	case "channel":
		f.channel = value
	case "message":
		f.message = value
	case "src":
		f.src = value
	case "dst":
		f.dst = value
	case "peer":
		f.peer = value
	case "request_id":
		f.requestID = value
	case "timestamp":
		f.timestamp = value
	case "clock":
		f.clock = value
	case "limit":
		f.limit = value
	case "before":
		f.before = value
	case "password":
		f.password = value
	case "public_key":
		f.publicKey = value
	case "token":
		f.token = value
	}
}

// request validates the fields the service needs and fills r.
func (f *rawFields) request(r Request, lim Limits) (Request, error) {
	p := rawParser{svc: r.Service, lim: lim}
	r.Clock = rawClock(f.clock)
	r.Timestamp = rawTimestamp(f.timestamp)
	if f.requestID != nil {
		r.RequestID = p.str("request_id", f.requestID)
		if len(r.RequestID) > 128 {
			p.fail("field \"request_id\" is longer than 128 bytes")
		}
	}
	switch r.Service {
	case Login:
		r.User = p.name("user", f.user)
		r.Password = p.secret("password", f.password)
		r.PublicKey = p.publicKey(f.publicKey)
	case Logout:
		r.User = p.name("user", f.user)
		r.Token = p.secret("token", f.token)
		if r.Token == "" {
			p.fail("field \"token\" is required")
		}
	case Whois:
		r.User = p.name("user", f.user)
	case Users, Channels:
	case Channel:
		r.Channel = p.name("channel", f.channel)
	case Publish:
		r.User = p.name("user", f.user)
		r.Channel = p.name("channel", f.channel)
		r.Text = p.text("message", f.message)
		r.Token = p.secret("token", f.token)
	case Message:
		r.Src = p.name("src", f.src)
		r.Dst = p.name("dst", f.dst)
		r.Text = p.text("message", f.message)
		r.Token = p.secret("token", f.token)
	case History:
		r.Token = p.secret("token", f.token)
		if f.channel != nil {
			r.Channel = p.name("channel", f.channel)
		} else {
			r.User = p.name("user", f.user)
			r.Peer = p.name("peer", f.peer)
		}
		r.Limit = p.limit(f.limit)
		r.Before = p.optionalInt("before", f.before)
	default:
		return r, Errorf(r.Service, "unknown service %q", r.Service)
	}
	return r, p.err
}

// rawParser reads fields one by one and keeps the first error, so a
// service's parse reads as a list of its fields.
type rawParser struct {
	svc string
	lim Limits
	err error
}

func (p *rawParser) fail(format string, args ...any) {
	if p.err == nil {
		p.err = Errorf(p.svc, format, args...)
	}
}

func (p *rawParser) str(key string, v []byte) string {
	s, ok := rawString(v)
	if !ok {
		p.fail("field %q must be a string, got %s", key, rawTypeName(v))
		return ""
	}
	return strings.Clone(s) // s points into the frame: the request gets its own copy
}

func (p *rawParser) required(key string, v []byte) string {
	if v == nil {
		p.fail("field %q is required", key)
		return ""
	}
	return p.str(key, v)
}

func (p *rawParser) name(key string, v []byte) string {
	s := p.required(key, v)
	if p.err == nil {
		if err := ValidName(s, p.lim.MaxName); err != nil {
			p.fail("field %q: %v", key, err)
		}
	}
	return s
}

func (p *rawParser) text(key string, v []byte) string {
	s := p.required(key, v)
	if p.err == nil {
		if err := validText(s, p.lim.MaxMessage); err != "" {
			p.fail("field %q %s", key, err)
		}
	}
	return s
}

// secret reads an optional password or token: absent is "", present it
// must be a non-empty string of at most MaxSecret bytes.
func (p *rawParser) secret(key string, v []byte) string {
	if v == nil {
		return ""
	}
	s := p.str(key, v)
	switch {
	case p.err != nil:
	case s == "":
		p.fail("field %q is empty", key)
	case p.lim.MaxSecret > 0 && len(s) > p.lim.MaxSecret:
		p.fail("field %q is %d bytes, the limit is %d", key, len(s), p.lim.MaxSecret)
	}
	return s
}

// publicKey reads an optional public key: the standard base64 of a
// 32-byte X25519 public key.
func (p *rawParser) publicKey(v []byte) string {
	if v == nil {
		return ""
	}
	s := p.str("public_key", v)
	if p.err == nil {
		if _, err := privatedm.DecodePublic(s); err != nil {
			p.fail("field \"public_key\" must be the standard base64 of a %d-byte X25519 public key (%v)", PublicKeySize, err)
		}
	}
	return s
}

// PublicKeySize is the size of an X25519 public key, in bytes.
const PublicKeySize = 32

func (p *rawParser) optionalInt(key string, v []byte) int64 {
	if v == nil {
		return 0
	}
	n, ok := rawInt(v)
	switch {
	case !ok:
		p.fail("field %q must be an integer, got %s", key, rawTypeName(v))
	case n < 0:
		p.fail("field %q must not be negative", key)
	}
	return n
}

// limit reads a history page size: 0 or missing is the default, and a
// limit over the largest page is capped to it, as IRC's CHATHISTORY does
// (the reply holds what fits, and says "more": true when there is more).
func (p *rawParser) limit(v []byte) int {
	n := p.optionalInt("limit", v)
	switch {
	case n == 0:
		return p.lim.DefaultHistory
	case p.lim.MaxHistoryLimit > 0 && n > int64(p.lim.MaxHistoryLimit):
		return p.lim.MaxHistoryLimit
	}
	return int(n)
}

// The raw readers below take bytes that wellFormed has already checked,
// so they never read out of bounds.

// nextValue splits the first value off b.
func nextValue(b []byte) (value, rest []byte) {
	rest, _ = skipValue(b, 0)
	return b[:len(b)-len(rest)], rest
}

// mapHeader reads a map header: the number of entries and what follows.
func mapHeader(b []byte) (n int, rest []byte, ok bool) {
	switch c := b[0]; {
	case c >= 0x80 && c <= 0x8f:
		return int(c & 0x0f), b[1:], true
	case c == 0xde:
		return int(binary.BigEndian.Uint16(b[1:])), b[3:], true
	case c == 0xdf:
		return int(binary.BigEndian.Uint32(b[1:])), b[5:], true
	}
	return 0, nil, false
}

// rawString returns a MessagePack string without copying it: the result
// shares b's memory, so it is only compared, or copied with strings.Clone.
func rawString(b []byte) (string, bool) {
	if len(b) == 0 {
		return "", false
	}
	var s []byte
	switch c := b[0]; {
	case c >= 0xa0 && c <= 0xbf:
		s = b[1:]
	case c == 0xd9:
		s = b[2:]
	case c == 0xda:
		s = b[3:]
	case c == 0xdb:
		s = b[5:]
	default:
		return "", false
	}
	return unsafe.String(unsafe.SliceData(s), len(s)), true
}

// rawInt reads an integer, or a float with no fraction.
func rawInt(b []byte) (int64, bool) {
	if len(b) == 0 {
		return 0, false
	}
	switch c := b[0]; {
	case c <= 0x7f:
		return int64(c), true
	case c >= 0xe0:
		return int64(int8(c)), true
	case c == 0xcc:
		return int64(b[1]), true
	case c == 0xcd:
		return int64(binary.BigEndian.Uint16(b[1:])), true
	case c == 0xce:
		return int64(binary.BigEndian.Uint32(b[1:])), true
	case c == 0xcf:
		u := binary.BigEndian.Uint64(b[1:])
		return int64(u), u <= math.MaxInt64
	case c == 0xd0:
		return int64(int8(b[1])), true
	case c == 0xd1:
		return int64(int16(binary.BigEndian.Uint16(b[1:]))), true
	case c == 0xd2:
		return int64(int32(binary.BigEndian.Uint32(b[1:]))), true
	case c == 0xd3:
		return int64(binary.BigEndian.Uint64(b[1:])), true
	case c == 0xca, c == 0xcb:
		f, _ := rawFloat(b)
		return floatInt(f)
	}
	return 0, false
}

func rawFloat(b []byte) (float64, bool) {
	switch b[0] {
	case 0xca:
		return float64(math.Float32frombits(binary.BigEndian.Uint32(b[1:]))), true
	case 0xcb:
		return math.Float64frombits(binary.BigEndian.Uint64(b[1:])), true
	}
	return 0, false
}

// rawClock reads a Lamport clock; anything unusable counts as 0.
func rawClock(b []byte) uint64 {
	if n, ok := rawInt(b); ok && n > 0 {
		return uint64(n)
	}
	return 0
}

// rawTimestamp reads integer or float Unix seconds or an RFC 3339 string;
// the zero time when absent or unreadable.
func rawTimestamp(b []byte) time.Time {
	if b == nil {
		return time.Time{}
	}
	if f, ok := rawFloat(b); ok {
		t, _ := floatTime(f)
		return t
	}
	if n, ok := rawInt(b); ok {
		return time.Unix(n, 0)
	}
	if s, ok := rawString(b); ok {
		if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
			return t
		}
		if f, err := strconv.ParseFloat(s, 64); err == nil {
			t, _ := floatTime(f)
			return t
		}
	}
	return time.Time{}
}

// rawTypeName names the type of a MessagePack value for error messages.
func rawTypeName(b []byte) string {
	if len(b) == 0 {
		return "nothing"
	}
	switch c := b[0]; {
	case c <= 0x7f || c >= 0xe0 || (c >= 0xcc && c <= 0xd3):
		return "an integer"
	case c >= 0x80 && c <= 0x8f, c == 0xde, c == 0xdf:
		return "a map"
	case c >= 0x90 && c <= 0x9f, c == 0xdc, c == 0xdd:
		return "an array"
	case c >= 0xa0 && c <= 0xbf, c == 0xd9, c == 0xda, c == 0xdb:
		return "a string"
	case c == 0xc0:
		return "nothing"
	case c == 0xc2, c == 0xc3:
		return "a boolean"
	case c == 0xca, c == 0xcb:
		return "a float"
	case c == 0xc4, c == 0xc5, c == 0xc6:
		return "binary"
	}
	return "an extension value"
}
