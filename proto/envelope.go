// Package proto is the wire protocol of ../shared/PROTOCOL.md: the
// MessagePack envelope {"service", "data"}, the client services and their
// validation, the two-frame publications, and the error replies.
//
// Nothing here touches a socket: it turns bytes into checked values and
// back, so it can be fuzzed and reused by every role.
package proto

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"time"

	"github.com/vmihailenco/msgpack/v5"
)

// Status values carried in replies. The standard uses Portuguese words for
// some services and "OK" for others; both are kept as they are.
const (
	StatusSuccess = "sucesso" // login, channel
	StatusOK      = "OK"      // publish, message, heartbeat
	StatusError   = "erro"    // any failure
)

// ErrorService is the service name of a reply to bytes that were not a
// valid envelope (so no service could be read).
const ErrorService = "error"

// Data is the "data" map of an envelope.
type Data map[string]any

// Envelope is one request, reply or control message: a service name and its
// data map.
type Envelope struct {
	Service string `msgpack:"service"`
	Data    Data   `msgpack:"data"`
}

// Error is a request the protocol rejects. Description says why, in words a
// user can act on; Service is the request's service when it could be read.
type Error struct {
	Service     string
	Description string
}

func (e *Error) Error() string { return e.Description }

// Errorf returns an *Error for service.
func Errorf(service, format string, args ...any) *Error {
	return &Error{Service: service, Description: fmt.Sprintf(format, args...)}
}

// Decode parses one frame into an envelope. The frame must be a MessagePack
// map with a string "service"; "data" must be a map when present (a missing
// data is an empty map). Any other shape is an *Error.
func Decode(frame []byte) (Envelope, error) {
	if err := wellFormed(frame); err != nil {
		return Envelope{}, Errorf(ErrorService, "request is not valid MessagePack: %v", err)
	}
	var v any
	if err := msgpack.Unmarshal(frame, &v); err != nil {
		return Envelope{}, Errorf(ErrorService, "request is not valid MessagePack: %v", err)
	}
	top, ok := v.(map[string]any)
	if !ok {
		return Envelope{}, Errorf(ErrorService, "request must be a MessagePack map {service, data}, got %s", typeName(v))
	}
	svc, ok := top["service"].(string)
	if !ok {
		return Envelope{}, Errorf(ErrorService, "field \"service\" must be a string, got %s", typeName(top["service"]))
	}
	env := Envelope{Service: svc, Data: Data{}}
	switch d := top["data"].(type) {
	case nil:
	case map[string]any:
		env.Data = d
	default:
		return Envelope{}, Errorf(svc, "field \"data\" must be a map, got %s", typeName(d))
	}
	return env, nil
}

// Encode serialises the envelope as one MessagePack map.
func (e Envelope) Encode() []byte {
	b, err := msgpack.Marshal(e)
	if err != nil {
		// Only values this package builds are encoded; failing here is a bug.
		panic(fmt.Sprintf("proto: encode %q: %v", e.Service, err))
	}
	return b
}

// Stamp sets the timestamp (integer Unix seconds, as the standard sends it)
// and the Lamport clock on the envelope's data and returns the envelope.
func (e Envelope) Stamp(now time.Time, clock uint64) Envelope {
	if e.Data == nil {
		e.Data = Data{}
	}
	e.Data["timestamp"] = now.Unix()
	e.Data["clock"] = clock
	return e
}

// ErrorReply builds the standard error reply. The text goes both under
// "description" (login, channel) and "message" (publish, message), so every
// client finds it where its service puts it.
func ErrorReply(service, description string) Envelope {
	if service == "" {
		service = ErrorService
	}
	return Envelope{Service: service, Data: Data{
		"status":      StatusError,
		"description": description,
		"message":     description,
	}}
}

// ReplyFor turns err into an error reply for service. An *Error keeps its
// own description; any other error is reported as an internal failure.
func ReplyFor(service string, err error) Envelope {
	var pe *Error
	if errors.As(err, &pe) {
		if pe.Service != "" && pe.Service != ErrorService {
			service = pe.Service
		}
		return ErrorReply(service, pe.Description)
	}
	return ErrorReply(service, "internal error: "+err.Error())
}

// String returns the string field key. A missing field is "" with ok
// false; a field of another type is an *Error.
func (d Data) String(service, key string) (s string, ok bool, err error) {
	v, present := d[key]
	if !present || v == nil {
		return "", false, nil
	}
	s, isString := v.(string)
	if !isString {
		return "", false, Errorf(service, "field %q must be a string, got %s", key, typeName(v))
	}
	return s, true, nil
}

// Int returns the integer field key (floats with no fraction are accepted).
// A missing field is 0 with ok false; anything else is an *Error.
func (d Data) Int(service, key string) (n int64, ok bool, err error) {
	v, present := d[key]
	if !present || v == nil {
		return 0, false, nil
	}
	n, isInt := toInt(v)
	if !isInt {
		return 0, false, Errorf(service, "field %q must be an integer, got %s", key, typeName(v))
	}
	return n, true, nil
}

// Clock returns the sender's Lamport clock; a missing or unusable value
// counts as 0, as the standard asks.
func (d Data) Clock() uint64 {
	n, ok := toInt(d["clock"])
	if !ok || n < 0 {
		return 0
	}
	return uint64(n)
}

// Timestamp returns the sender's timestamp: an integer or float number of
// Unix seconds, or an RFC 3339 string. ok is false when it is missing or
// unreadable.
func (d Data) Timestamp() (t time.Time, ok bool) {
	switch v := d["timestamp"].(type) {
	case float32:
		return floatTime(float64(v))
	case float64:
		return floatTime(v)
	case string:
		if t, err := time.Parse(time.RFC3339Nano, v); err == nil {
			return t, true
		}
		if f, err := strconv.ParseFloat(v, 64); err == nil {
			return floatTime(f)
		}
		return time.Time{}, false
	default:
		if n, ok := toInt(v); ok {
			return time.Unix(n, 0), true
		}
		return time.Time{}, false
	}
}

func floatTime(f float64) (time.Time, bool) {
	if math.IsNaN(f) || math.IsInf(f, 0) || math.Abs(f) > 1e12 {
		return time.Time{}, false
	}
	sec, frac := math.Modf(f)
	return time.Unix(int64(sec), int64(frac*1e9)), true
}

func toInt(v any) (int64, bool) {
	switch n := v.(type) {
	case int8:
		return int64(n), true
	case int16:
		return int64(n), true
	case int32:
		return int64(n), true
	case int64:
		return n, true
	case int:
		return int64(n), true
	case uint8:
		return int64(n), true
	case uint16:
		return int64(n), true
	case uint32:
		return int64(n), true
	case uint64:
		if n > math.MaxInt64 {
			return 0, false
		}
		return int64(n), true
	case uint:
		if uint64(n) > math.MaxInt64 {
			return 0, false
		}
		return int64(n), true
	case float32:
		return floatInt(float64(n))
	case float64:
		return floatInt(n)
	}
	return 0, false
}

func floatInt(f float64) (int64, bool) {
	if f != math.Trunc(f) || math.Abs(f) > 1<<62 {
		return 0, false
	}
	return int64(f), true
}

func typeName(v any) string {
	switch v.(type) {
	case nil:
		return "nothing"
	case string:
		return "a string"
	case bool:
		return "a boolean"
	case []byte:
		return "binary"
	case []any:
		return "an array"
	case map[string]any, map[any]any:
		return "a map"
	case float32, float64:
		return "a float"
	}
	if _, ok := toInt(v); ok {
		return "an integer"
	}
	return fmt.Sprintf("%T", v)
}

// PeekService returns the service of a request frame without checking
// the rest of it, nor its size ("" when no service can be read). Servers
// use it to route their cluster's own messages, which may be larger than
// a client request.
func PeekService(frame []byte) string {
	if wellFormed(frame) != nil {
		return ""
	}
	var service []byte
	if ok, _ := eachEntry(frame, func(key string, value []byte) {
		if key == "service" {
			service = value
		}
	}); !ok || service == nil {
		return ""
	}
	s, _ := rawString(service)
	return s
}
