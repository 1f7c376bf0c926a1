package cluster

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"chat/proto"
)

// The cluster's own messages travel in the standard envelope
// {"service", "data"}, with "timestamp" and "clock" in data like every
// other message. Their data is a Go struct (package replication's
// messages, and the few below), encoded as a MessagePack map.

// Services a server answers for other servers (and for chat status).
const (
	ServiceClock       = "clock"       // standard: the server's clock (Berkeley poll)
	ServiceAdjust      = "adjust"      // standard: add an adjustment to the clock
	ServiceElection    = "election"    // standard: a lower rank is electing; the answer is OK
	ServiceCoordinator = "coordinator" // extension: the coordinator's announcement, sent directly
	ServicePing        = "ping"        // extension: liveness check of the coordinator
	ServiceForward     = "forward"     // extension: a write forwarded to the coordinator
	ServiceStatus      = "status"      // extension: what chat status shows
)

// electionMsg is the data of election and coordinator requests: the
// sender's name and rank (extensions; other implementations send none).
type electionMsg struct {
	User        string `msgpack:"user,omitempty"`
	Rank        int    `msgpack:"rank,omitempty"`
	Coordinator string `msgpack:"coordinator,omitempty"`
}

// forwardMsg carries a client's request frame, as received, to the
// coordinator.
type forwardMsg struct {
	Frame []byte `msgpack:"frame"`
}

// encodeBufs holds the buffers encodeMsg builds frames in.
var encodeBufs = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// encodeMsg builds the envelope of service with data v (a struct),
// stamped with now and the Lamport clock. It writes the envelope and v
// in one buffer, then adds timestamp and clock to v's map: the bytes are
// those of msgpack encoding {"service", "data"} with the two in data.
func encodeMsg(service string, v any, now time.Time, clock uint64) []byte {
	buf := encodeBufs.Get().(*bytes.Buffer)
	defer func() {
		if buf.Cap() <= 64<<10 { // not the buffer of a large fetch reply
			encodeBufs.Put(buf)
		}
	}()
	buf.Reset()
	out := append(buf.AvailableBuffer(), 0x82)
	out = appendString(out, "service")
	out = appendString(out, service)
	out = appendString(out, "data")
	buf.Write(out)

	at := buf.Len() // where data starts
	enc := msgpack.GetEncoder()
	enc.Reset(buf) // as msgpack.Marshal does
	err := enc.Encode(v)
	msgpack.PutEncoder(enc)
	data := buf.Bytes()[at:]
	if err != nil || len(data) == 0 || data[0]&0xf0 != 0x80 || data[0]&0x0f > 13 {
		panic(fmt.Sprintf("cluster: %s data must be a small struct (%v)", service, err))
	}
	data[0] += 2 // two more entries: timestamp and clock
	out = appendString(buf.AvailableBuffer(), "timestamp")
	out = appendUint(out, uint64(now.Unix()))
	out = appendString(out, "clock")
	out = appendUint(out, clock)
	buf.Write(out)
	return bytes.Clone(buf.Bytes())
}

// appendString appends s as msgpack encodes a string (str8 from 32
// bytes: MessagePack 2.0).
func appendString(b []byte, s string) []byte {
	switch n := len(s); {
	case n < 32:
		b = append(b, 0xa0|byte(n))
	case n < 1<<8:
		b = append(b, 0xd9, byte(n))
	case n < 1<<16:
		b = binary.BigEndian.AppendUint16(append(b, 0xda), uint16(n))
	default:
		b = binary.BigEndian.AppendUint32(append(b, 0xdb), uint32(n))
	}
	return append(b, s...)
}

// appendUint appends n as msgpack encodes a uint64: in 9 bytes, whatever
// its value.
func appendUint(b []byte, n uint64) []byte {
	return binary.BigEndian.AppendUint64(append(b, 0xcf), n)
}

// message is a received frame whose data is still encoded.
type message struct {
	service []byte // only error messages use it
	data    []byte // the data map, in the frame
	clock   uint64 // the sender's Lamport clock
}

// readMsg reads a frame's envelope and the sender's Lamport clock. A
// reply with status "erro" is returned as an error with its description
// (and the clock).
func readMsg(frame []byte) (message, error) {
	service, data, ok := scanEnvelope(frame)
	if !ok {
		return readMsgSlow(frame)
	}
	h := scanHead(data)
	m := message{service: service, data: data, clock: h.clock}
	if string(h.status) == proto.StatusError {
		return m, fmt.Errorf("%s: %s", service, h.description)
	}
	return m, nil
}

// rawEnvelope is an envelope whose data is still encoded.
type rawEnvelope struct {
	Service string             `msgpack:"service"`
	Data    msgpack.RawMessage `msgpack:"data"`
}

// readMsgSlow is readMsg for the frames scanEnvelope leaves: not the map
// every server sends (an array, nil or no data, a truncated frame, not
// MessagePack at all). msgpack's own decoding decides what they mean and
// says what is wrong, as it always has.
func readMsgSlow(frame []byte) (message, error) {
	if err := proto.WellFormed(frame); err != nil {
		return message{}, fmt.Errorf("malformed message: %w", err)
	}
	var env rawEnvelope
	if err := msgpack.Unmarshal(frame, &env); err != nil {
		return message{}, fmt.Errorf("malformed message: %w", err)
	}
	if len(env.Data) == 0 {
		return message{}, errors.New("message has no data")
	}
	var head struct { // the clock, and an error reply's status
		Clock       uint64 `msgpack:"clock"`
		Status      string `msgpack:"status"`
		Description string `msgpack:"description"`
	}
	_ = msgpack.Unmarshal(env.Data, &head) // a missing or odd field counts as zero
	m := message{service: []byte(env.Service), data: env.Data, clock: head.Clock}
	if head.Status == proto.StatusError {
		return m, fmt.Errorf("%s: %s", env.Service, head.Description)
	}
	return m, nil
}

// decode reads the message's data into v, a pointer to its struct.
func (m message) decode(v any) error {
	if err := msgpack.Unmarshal(m.data, v); err != nil {
		return fmt.Errorf("malformed %s message: %w", m.service, err)
	}
	return nil
}

// decodeMsg reads a frame into v (a pointer to the data struct; nil:
// only the envelope) and returns the sender's Lamport clock. A reply with
// status "erro" is returned as an error with its description.
func decodeMsg(frame []byte, v any) (clock uint64, err error) {
	m, err := readMsg(frame)
	if err == nil && v != nil {
		err = m.decode(v)
	}
	return m.clock, err
}

// Unwrap returns the client request inside a `forward` frame, and the
// forwarding server's Lamport clock.
func Unwrap(frame []byte) (inner []byte, clock uint64, err error) {
	var m forwardMsg
	clock, err = decodeMsg(frame, &m)
	if err == nil && len(m.Frame) == 0 {
		err = errors.New("forward without a frame")
	}
	return m.Frame, clock, err
}
