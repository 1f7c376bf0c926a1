package cluster

import (
	"errors"
	"fmt"
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

// encodeMsg builds the envelope of service with data v (a struct),
// stamped with now and the Lamport clock.
func encodeMsg(service string, v any, now time.Time, clock uint64) []byte {
	data, err := msgpack.Marshal(v)
	if err != nil || len(data) == 0 || data[0]&0xf0 != 0x80 || data[0]&0x0f > 13 {
		panic(fmt.Sprintf("cluster: %s data must be a small struct (%v)", service, err))
	}
	data[0] += 2 // two more entries: timestamp and clock
	data = appendString(data, "timestamp")
	data = appendUint(data, uint64(now.Unix()))
	data = appendString(data, "clock")
	data = appendUint(data, clock)
	out := []byte{0x82}
	out = appendString(out, "service")
	out = appendString(out, service)
	out = appendString(out, "data")
	return append(out, data...)
}

func appendString(b []byte, s string) []byte {
	enc, _ := msgpack.Marshal(s)
	return append(b, enc...)
}

func appendUint(b []byte, n uint64) []byte {
	enc, _ := msgpack.Marshal(n)
	return append(b, enc...)
}

// rawEnvelope is an envelope whose data is still encoded.
type rawEnvelope struct {
	Service string             `msgpack:"service"`
	Data    msgpack.RawMessage `msgpack:"data"`
}

// decodeMsg reads a frame of service into v (a pointer to the data
// struct) and returns the sender's Lamport clock. A reply with status
// "erro" is returned as an error with its description.
func decodeMsg(frame []byte, v any) (clock uint64, err error) {
	var env rawEnvelope
	if err := msgpack.Unmarshal(frame, &env); err != nil {
		return 0, fmt.Errorf("malformed message: %w", err)
	}
	if len(env.Data) == 0 {
		return 0, errors.New("message has no data")
	}
	var head struct { // the clock, and an error reply's status, in one pass
		Clock       uint64 `msgpack:"clock"`
		Status      string `msgpack:"status"`
		Description string `msgpack:"description"`
	}
	_ = msgpack.Unmarshal(env.Data, &head) // a missing or odd field counts as zero
	if head.Status == proto.StatusError {
		return head.Clock, fmt.Errorf("%s: %s", env.Service, head.Description)
	}
	if v != nil {
		if err := msgpack.Unmarshal(env.Data, v); err != nil {
			return head.Clock, fmt.Errorf("malformed %s message: %w", env.Service, err)
		}
	}
	return head.Clock, nil
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
