package transport

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync/atomic"
)

// ZMTP wire constants (https://rfc.zeromq.org/spec/23/, 37/).
const (
	zGreetingLen = 64
	zFlagMore    = 0x01
	zFlagLong    = 0x02
	zFlagCommand = 0x04
	zFlagMask    = 0x07

	zPropIdentity   = "Identity"
	zPropSocketType = "Socket-Type"
	// zPropMarker is added by the guard to the READY zmq4 sends. A peer whose
	// READY carries it is another guard, which answers PING (plain zmq4 does
	// not: it hands a PING to the application as a message).
	zPropMarker = "X-Gtcp-Ping"
)

// zmq4Greeting is byte for byte what zmq4 v0.17.0 writes in Conn.greet: ZMTP
// 3.0, NULL mechanism, as-server 0 whatever the side, zero filler.
var zmq4Greeting = func() [zGreetingLen]byte {
	var g [zGreetingLen]byte
	g[0] = 0xFF
	g[9] = 0x7F
	g[10] = 3
	g[11] = 0
	copy(g[12:32], "NULL")
	return g
}()

// guardViolation is a reason to close a connection. It implements net.Error
// with Timeout() == false so zmq4's checkIO marks the Conn closed and drops it.
type guardViolation struct {
	kind *atomic.Uint64 // counter to bump, nil: none
	msg  string
}

func (e *guardViolation) Error() string   { return "transport: gtcp: " + e.msg }
func (e *guardViolation) Timeout() bool   { return false }
func (e *guardViolation) Temporary() bool { return false }

func violation(kind *atomic.Uint64, format string, args ...any) *guardViolation {
	return &guardViolation{kind: kind, msg: fmt.Sprintf(format, args...)}
}

var errGuardClosed = &guardViolation{msg: "use of closed connection"}

// checkGreetingPrefix validates as much of a peer greeting as is in g (a
// prefix of the 64 bytes), so garbage is refused as soon as it arrives.
func checkGreetingPrefix(g []byte) error {
	bad := func(f string, a ...any) error { return violation(&gstats.badGreeting, f, a...) }
	if len(g) > 0 && g[0] != 0xFF {
		return bad("not a ZMTP 3 greeting (first byte %#x)", g[0])
	}
	if len(g) > 9 && g[9] != 0x7F {
		return bad("bad greeting signature")
	}
	if len(g) > 10 && g[10] < 3 {
		return bad("ZMTP version %d not supported", g[10])
	}
	if len(g) >= 32 {
		if !bytes.Equal(g[12:32], zmq4Greeting[12:32]) {
			return bad("security mechanism %q not supported (NULL only)", strings.TrimRight(string(g[12:32]), "\x00"))
		}
	}
	if len(g) > 32 && g[32] > 1 {
		return bad("bad as-server flag %#x", g[32])
	}
	return nil
}

// zProp is one metadata property as received.
type zProp struct {
	name  string
	value []byte
}

// parseReady validates a READY command body ("\x05READY" + properties).
func parseReady(body []byte) ([]zProp, error) {
	bad := func(f string, a ...any) error { return violation(&gstats.badReady, f, a...) }
	if len(body) < 6 || body[0] != 5 || string(body[1:6]) != "READY" {
		return nil, bad("first command is not READY")
	}
	p := body[6:]
	var props []zProp
	seen := map[string]bool{}
	for len(p) > 0 {
		nl := int(p[0])
		p = p[1:]
		if nl == 0 || nl > len(p) {
			return nil, bad("metadata truncated or empty property name")
		}
		name := string(p[:nl])
		p = p[nl:]
		for i := 0; i < len(name); i++ {
			if !isNameChar(name[i]) {
				return nil, bad("bad property name %q", name)
			}
		}
		if len(p) < 4 {
			return nil, bad("metadata truncated in value length of %q", name)
		}
		vl := binary.BigEndian.Uint32(p)
		p = p[4:]
		if uint64(vl) > uint64(len(p)) {
			return nil, bad("metadata truncated: %q claims %d bytes, %d left", name, vl, len(p))
		}
		key := strings.ToLower(name)
		if seen[key] {
			return nil, bad("duplicate property %q", name)
		}
		seen[key] = true
		props = append(props, zProp{name: name, value: p[:vl:vl]})
		p = p[vl:]
	}
	st, ok := findProp(props, zPropSocketType)
	if !ok {
		return nil, bad("no Socket-Type")
	}
	if !knownSocketType(string(st)) {
		return nil, bad("unknown Socket-Type %q", st)
	}
	if id, ok := findProp(props, zPropIdentity); ok && len(id) > 255 {
		return nil, bad("identity longer than 255 bytes")
	}
	return props, nil
}

func isNameChar(b byte) bool {
	return b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z' || b >= '0' && b <= '9' ||
		b == '-' || b == '_' || b == '.' || b == '+'
}

func findProp(props []zProp, name string) ([]byte, bool) {
	for _, p := range props {
		if strings.EqualFold(p.name, name) {
			return p.value, true
		}
	}
	return nil, false
}

// knownSocketType: the ZMTP 3 socket types zmq4 implements.
func knownSocketType(s string) bool {
	switch s {
	case "PAIR", "PUB", "SUB", "REQ", "REP", "DEALER", "ROUTER", "PULL", "PUSH", "XPUB", "XSUB":
		return true
	}
	return false
}

// encodeReady builds a complete READY command frame (header included).
func encodeReady(props []zProp) []byte {
	n := 6
	for _, p := range props {
		n += 1 + len(p.name) + 4 + len(p.value)
	}
	b := make([]byte, 0, 9+n)
	b = appendFrameHeader(b, zFlagCommand, int64(n))
	b = append(b, 5)
	b = append(b, "READY"...)
	for _, p := range props {
		b = appendProp(b, p.name, p.value)
	}
	return b
}

func appendProp(b []byte, name string, value []byte) []byte {
	b = append(b, byte(len(name)))
	b = append(b, name...)
	b = binary.BigEndian.AppendUint32(b, uint32(len(value)))
	return append(b, value...)
}

func appendFrameHeader(b []byte, flags byte, size int64) []byte {
	if size > 255 {
		b = append(b, flags|zFlagLong)
		return binary.BigEndian.AppendUint64(b, uint64(size))
	}
	return append(b, flags&^zFlagLong, byte(size))
}

// appendCommand appends a command frame: name-len, name, body.
func appendCommand(b []byte, name string, body []byte) []byte {
	b = appendFrameHeader(b, zFlagCommand, int64(1+len(name)+len(body)))
	b = append(b, byte(len(name)))
	b = append(b, name...)
	return append(b, body...)
}

// routingIDs generates libzmq-style routing identities: 0x00 + 4-byte
// counter. Peers may not choose identities starting with 0x00 (libzmq
// reserves them), so the guard rewrites those too.
var routingIDs atomic.Uint32

func init() { routingIDs.Store(rand.Uint32()) }

func newRoutingID() []byte {
	b := make([]byte, 5)
	binary.BigEndian.PutUint32(b[1:], routingIDs.Add(1))
	return b
}
