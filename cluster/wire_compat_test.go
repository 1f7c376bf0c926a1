package cluster

import (
	"bytes"
	"errors"
	"fmt"
	"reflect"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"chat/proto"
	"chat/replication"
)

// The encoder and decoder in wire.go replace ones built on msgpack.Marshal
// and msgpack.Unmarshal alone. Other implementations read and write these
// frames, so the new ones must produce the same bytes and accept, refuse
// and report exactly what the old ones did: referenceEncodeMsg and
// referenceDecodeMsg are the old ones, word for word, to compare with.

func referenceEncodeMsg(service string, v any, now time.Time, clock uint64) []byte {
	data, err := msgpack.Marshal(v)
	if err != nil || len(data) == 0 || data[0]&0xf0 != 0x80 || data[0]&0x0f > 13 {
		panic(fmt.Sprintf("cluster: %s data must be a small struct (%v)", service, err))
	}
	data[0] += 2
	data = referenceAppend(data, "timestamp")
	data = referenceAppend(data, uint64(now.Unix()))
	data = referenceAppend(data, "clock")
	data = referenceAppend(data, clock)
	out := []byte{0x82}
	out = referenceAppend(out, "service")
	out = referenceAppend(out, service)
	out = referenceAppend(out, "data")
	return append(out, data...)
}

func referenceAppend(b []byte, v any) []byte {
	enc, _ := msgpack.Marshal(v)
	return append(b, enc...)
}

func referenceDecodeMsg(frame []byte, v any) (clock uint64, err error) {
	var env rawEnvelope
	if err := msgpack.Unmarshal(frame, &env); err != nil {
		return 0, fmt.Errorf("malformed message: %w", err)
	}
	if len(env.Data) == 0 {
		return 0, errors.New("message has no data")
	}
	var head struct {
		Clock       uint64 `msgpack:"clock"`
		Status      string `msgpack:"status"`
		Description string `msgpack:"description"`
	}
	_ = msgpack.Unmarshal(env.Data, &head)
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

// sentMessages is every kind of data the cluster sends (requests and
// replies), with strings and byte strings of each length class.
func sentMessages() []any {
	long := func(n int) string { return strings.Repeat("x", n) }
	app := benchAppend()
	return []any{
		struct{}{},
		electionMsg{}, electionMsg{User: "server-1", Rank: 1}, electionMsg{User: "server-3", Rank: 3, Coordinator: "server-3"},
		forwardMsg{}, forwardMsg{Frame: []byte("\x82\xa7service\xa5login\xa4data\x81\xa4user\xa3bob")}, forwardMsg{Frame: make([]byte, 300)},
		adjustMsg{Adjustment: -0.25, AdjustmentMs: -250}, serverMsg{User: "server-2", Addr: "tcp://10.0.0.2:5560"}, serverMsg{User: "s"},
		okReply{Status: proto.StatusOK},
		struct {
			Time   float64 `msgpack:"time"`
			TimeMs int64   `msgpack:"time_ms"`
		}{1_700_000_000.123456, 1_700_000_000_123},
		struct {
			Election string `msgpack:"election"`
		}{"OK"},
		proto.Data{"status": proto.StatusOK}, // Status's reply is a map: one key keeps its order
		replication.Prepare{Epoch: 8, Leader: "server-3"},
		replication.PrepareReply{From: "server-1", OK: true, Promised: replication.Promise{Epoch: 7, Leader: "server-2"}, Last: replication.Pos{LSN: 1 << 40, Epoch: 7}},
		app,
		replication.Append{Epoch: 7, Leader: "server-3", Prev: replication.Pos{LSN: 10, Epoch: 7}, Commit: 10}, // a heartbeat
		replication.Append{Entries: []replication.Entry{{LSN: 1, Data: make([]byte, 70_000)}, {LSN: 2, Data: []byte{}}, {LSN: 3}}},
		replication.AppendReply{From: "server-1", OK: true, Epoch: 7, Last: replication.Pos{LSN: 1045, Epoch: 7}, Seq: 88123},
		replication.AppendReply{From: long(40), Epoch: 9},
		replication.Fetch{After: replication.Pos{LSN: 5, Epoch: 2}, Max: 512},
		replication.FetchReply{From: "server-2", Diverged: true},
		replication.FetchReply{From: "server-2", Entries: app.Entries, Last: replication.Pos{LSN: 1045, Epoch: 7}},
		replication.CommitReply{From: "server-3", OK: true, Epoch: 7, Commit: 1045},
	}
}

// encodeMsg writes the bytes the old encoder wrote, for every message the
// cluster sends, every length class of the service name, and clocks and
// timestamps small and large.
func TestEncodeMatchesReference(t *testing.T) {
	services := []string{"", "append", strings.Repeat("s", 31), strings.Repeat("s", 32), strings.Repeat("s", 255), strings.Repeat("s", 256), strings.Repeat("s", 70_000)}
	stamps := []struct {
		now   time.Time
		clock uint64
	}{{time.Unix(0, 0), 0}, {time.Unix(1_700_000_000, 5), 42}, {time.Unix(1<<40, 0), 1<<64 - 1}}
	for i, v := range sentMessages() {
		for _, service := range services {
			for _, s := range stamps {
				got, want := encodeMsg(service, v, s.now, s.clock), referenceEncodeMsg(service, v, s.now, s.clock)
				if !bytes.Equal(got, want) {
					t.Fatalf("message %d (%T), service of %d bytes, clock %d:\n got %x\nwant %x", i, v, len(service), s.clock, got, want)
				}
			}
		}
	}
	// What the old one refused (data that is not a struct of at most 13
	// fields), the new one refuses too.
	for _, v := range []any{5, []int{1}, nil, map[string]int{"a": 1, "b": 2, "c": 3, "d": 4, "e": 5, "f": 6, "g": 7, "h": 8, "i": 9, "j": 10, "k": 11, "l": 12, "m": 13, "n": 14}} {
		if !panics(func() { encodeMsg("x", v, time.Now(), 1) }) || !panics(func() { referenceEncodeMsg("x", v, time.Now(), 1) }) {
			t.Errorf("%#v: not refused by both encoders", v)
		}
	}
}

func panics(f func()) (panicked bool) {
	defer func() { panicked = recover() != nil }()
	f()
	return false
}

// raw is MessagePack written as it is into a frame built by msg.
type raw []byte

// msg encodes key-value pairs as a map in that order (the test's frames
// need a fixed order, duplicate keys and malformed values).
func msg(kv ...any) raw {
	var b bytes.Buffer
	enc := msgpack.NewEncoder(&b)
	_ = enc.EncodeMapLen(len(kv) / 2)
	for _, x := range kv {
		if r, ok := x.(raw); ok {
			b.Write(r)
		} else if err := enc.Encode(x); err != nil {
			panic(err)
		}
	}
	return raw(b.Bytes())
}

// compatFrames are frames of every kind: valid messages, erro replies,
// other forms msgpack accepts, wrong types, garbage, and every truncation
// of two valid frames.
func compatFrames() [][]byte {
	now := time.Unix(1_700_000_000, 0)
	var frames [][]byte
	for _, v := range sentMessages() {
		frames = append(frames, encodeMsg("append", v, now, 77))
	}
	app := encodeMsg(replication.ServiceAppend, benchAppend(), now, 1_000_042)
	refusal := proto.ErrorReply(ServicePing, "unknown service ping").Stamp(now, 7).Encode()
	for _, f := range [][]byte{app, refusal} {
		for n := range f {
			frames = append(frames, f[:n])
		}
	}
	entry := msg("lsn", 1, "epoch", 1, "data", []byte("x"))
	entries := raw(append([]byte{0x91}, entry...))
	for _, f := range []raw{
		raw(refusal),
		msg("service", "ping", "data", msg("status", "erro", "description", "no", "clock", 9)),
		msg("data", msg("clock", 9, "description", "no", "status", "erro"), "service", "ping"), // data first
		msg("service", "ping", "data", msg("status", []byte("erro"), "description", []byte("bin"))),
		msg("service", "ping", "data", msg("status", "erro")),                                        // no description
		msg("service", "ping", "data", msg("status", "erro", "clock", "x", "description", "late")),   // stops at the clock
		msg("service", "ping", "data", msg("clock", 3.5, "status", "erro")),                          // float clock: stops
		msg("service", "ping", "data", msg("clock", -1, "status", "OK")),                             // negative wraps
		msg("service", "ping", "data", msg("clock", int8(-2), "clock", int16(-300), "x", int32(-5))), // signed codes
		msg("service", "ping", "data", msg("clock", uint8(200), "clock", uint16(60000), "clock", uint32(1<<31))),
		msg("service", "ping", "data", msg("clock", 5, "clock", "bad")),                            // keeps the first
		msg("service", "ping", "data", msg("status", 1, "description", "x")),                       // status of the wrong type
		msg("service", "ping", "data", msg("status", nil, "clock", nil)),                           // nil fields
		msg("service", "ping", "data", raw{0x81, 0x01, 0xa4, 'e', 'r', 'r', 'o'}),                  // an integer key
		msg("service", "ping", "data", raw{0x82, 0xc0, 0x05, 0xa5, 'c', 'l', 'o', 'c', 'k', 0x06}), // a nil key
		msg("service", "ping", "data", raw{0x81, 0xc4, 0x05, 'c', 'l', 'o', 'c', 'k', 0x06}),       // a bin key
		msg("service", "append", "data", msg("epoch", 1, "entries", entries, "clock", 4)),
		msg("service", "append", "data", msg("entries", "not a list", "clock", 4)),
		msg("service", "append", "data", msg("entries", raw{0x91, 0x93, 0x01, 0x01, 0xa1, 'x'}, "clock", 4)), // an entry as an array
		msg("service", "append", "data", msg("entries", raw{0x91, 0x92, 0x01, 0x01}, "clock", 4)),            // of the wrong length
		msg("service", "append", "data", msg("entries", raw{0x92, 0x81}, "clock", 4)),                        // truncated inside
		msg("service", "append", "data", msg("leader", raw{0xd9, 0x03, 'a', 'b', 'c'}, "prev", raw{0x80})),
		msg("service", "append", "data", msg("x", raw{0xd4, 0x01, 0x02}, "y", raw{0xc7, 0x02, 0x01, 0x01, 0x02}, "z", raw{0xd5, 0x01, 0x01, 0x02}, "clock", 8)), // ext values
		msg("service", "append", "data", msg("x", raw{0xc8, 0x00, 0x01, 0x05, 0x01}, "y", raw{0xc9, 0x00, 0x00, 0x00, 0x00, 0x05}, "clock", 8)),
		msg("service", "append", "data", msg("x", raw{0xd8, 0x01}, "clock", 8)), // fixext16, truncated
		msg("service", "append", "data", msg("x", raw{0xca, 0, 0, 0, 0}, "y", raw{0xcb, 0, 0, 0, 0, 0, 0, 0, 0}, "z", raw{0xc3}, "clock", 8)),
		msg("service", "append", "data", msg("x", raw{0xc1}, "clock", 8)),
		msg("service", "append", "data", raw{0xde, 0x00, 0x01, 0xa5, 'c', 'l', 'o', 'c', 'k', 0x07}), // map16
		msg("service", "append", "data", raw{0xdf, 0x00, 0x00, 0x00, 0x01, 0xa5, 'c', 'l', 'o', 'c', 'k', 0x07}),
		msg("service", "append", "data", raw{0xdf, 0xff, 0xff, 0xff, 0xff}), // a huge map, truncated
		msg("service", "append", "data", raw{0x81, 0xa1, 'x', 0xdd, 0xff, 0xff, 0xff, 0xff}),
		msg("service", "append", "data", raw{0x81, 0xa1, 'x', 0xdb, 0xff, 0xff, 0xff, 0xff}),
		msg("service", "append", "data", msg(), "data", msg("clock", 3)), // twice: the last counts
		msg("service", "append", "data", msg("clock", 3), "data", nil),
		msg("service", "append", "data", msg("clock", 3), "data", []any{1, "erro", "x"}),
		msg("service", "a", "service", "b", "data", msg("status", "erro")),
		msg("service", nil, "data", msg("status", "erro")),
		msg("service", 5, "data", msg()),
		msg("service", []byte("bin"), "data", msg("status", "erro", "description", "d")),
		msg("data", msg("clock", 1)), // no service
		msg("service", "ping"),       // no data
		msg("service", "ping", "data", nil),
		msg("service", "ping", "data", "text"),
		msg("service", "ping", "data", 12),
		msg("service", "ping", "data", []any{5, "erro", "array head"}), // the head as an array
		msg("service", "ping", "data", []any{5, "OK"}),
		msg("service", "ping", "data", []any{}),
		msg("service", "ping", "data", msg(), "extra", raw{0xc1}),
		msg("service", "ping", "data", msg(), 7, 8), // an integer key in the envelope
		msg("service", "ping", "data", msg(), nil, 8),
		raw(append(msg("service", "ping", "data", msg("clock", 2)), 0xc1, 0xff)),       // trailing bytes
		raw{0x92, 0xa4, 'p', 'i', 'n', 'g', 0x81, 0xa5, 'c', 'l', 'o', 'c', 'k', 0x03}, // the envelope as an array
		raw{0x93, 0xa4, 'p', 'i', 'n', 'g', 0x80, 0x80},
		raw{0x90}, raw{0xc0}, raw{0xc1}, raw{0x80}, raw{0x92, 0x01, 0x02}, raw("GET / HTTP/1.1"),
		raw{0x81, 0xa4, 'd', 'a', 't', 'a', 0x80},
		raw{0x82, 0xa4, 'd', 'a', 't', 'a', 0x80}, // one entry missing
	} {
		frames = append(frames, f)
	}
	return append(frames, nil, []byte{})
}

// decodeTargets are the values a frame is decoded into in the comparison.
var decodeTargets = []func() any{
	func() any { return nil },
	func() any { return new(replication.Append) },
	func() any { return new(replication.AppendReply) },
	func() any { return new(forwardMsg) },
	func() any { return new(electionMsg) },
}

// checkSameDecoding fails unless decodeMsg and the old decoder agree on
// frame: the clock, the error (word for word) and what lands in v. A frame
// that is not read in place and is not well formed is refused before
// msgpack sees it (the old decoder let msgpack allocate what it declares),
// with proto.WellFormed's reason. It also checks skipValue against
// msgpack's Skip.
func checkSameDecoding(t *testing.T, frame []byte) {
	t.Helper()
	_, _, inPlace := scanEnvelope(frame)
	notWellFormed := proto.WellFormed(frame)
	for _, target := range decodeTargets {
		got, want := target(), target()
		gotClock, gotErr := decodeMsg(frame, got)
		var wantClock uint64
		var wantErr error
		if !inPlace && notWellFormed != nil {
			wantErr = fmt.Errorf("malformed message: %w", notWellFormed)
		} else {
			wantClock, wantErr = referenceDecodeMsg(frame, want)
		}
		if fmt.Sprint(gotErr) != fmt.Sprint(wantErr) || gotClock != wantClock || !reflect.DeepEqual(got, want) {
			t.Fatalf("frame %.200x into %T:\n got clock %d, %.300v, %.300v\nwant clock %d, %.300v, %.300v", frame, want, gotClock, gotErr, fmt.Sprintf("%+v", got), wantClock, wantErr, fmt.Sprintf("%+v", want))
		}
	}
	if notWellFormed != nil && strings.Contains(notWellFormed.Error(), "nesting") {
		return // msgpack skips any depth; skipValue refuses more than 32
	}
	if declaresHuge(frame) {
		return // msgpack's Skip would allocate what it declares
	}
	dec := msgpack.NewDecoder(bytes.NewReader(frame))
	wantOK := dec.Skip() == nil
	end, ok := skipValue(frame, 0)
	if ok != wantOK || ok && end != len(frame)-dec.Buffered().(*bytes.Reader).Len() {
		t.Fatalf("skipValue(%x) = %d, %v; msgpack's Skip: %v", frame, end, ok, wantOK)
	}
}

// The new decoder accepts and refuses what the old one did, with the same
// words, on frames of every kind.
func TestDecodeMatchesReference(t *testing.T) {
	for _, f := range compatFrames() {
		checkSameDecoding(t, f)
	}
	// What servers send is read in place, not left to msgpack.
	refusal := proto.ErrorReply(ServicePing, "unknown service ping").Stamp(time.Now(), 7).Encode()
	for _, v := range append(sentMessages(), refusal) {
		frame, ok := v.([]byte)
		if !ok {
			frame = encodeMsg(replication.ServiceAppend, v, time.Now(), 9)
		}
		if _, _, ok := scanEnvelope(frame); !ok {
			t.Errorf("%x is not read in place", frame)
		}
	}
}

// FuzzDecodeMsg: on any bytes, the new decoder and the old one agree.
func FuzzDecodeMsg(f *testing.F) {
	for _, frame := range compatFrames() {
		f.Add(frame)
	}
	f.Fuzz(func(t *testing.T, frame []byte) {
		checkSameDecoding(t, frame)
	})
}

// declaresHuge reports whether b may hold a 32-bit length of 16 MB or
// more: msgpack allocates what a length declares, even past the end of
// the frame, and its pooled decoders keep the buffer.
func declaresHuge(b []byte) bool {
	for i, c := range b {
		switch c {
		case 0xc6, 0xc9, 0xdb, 0xdd, 0xdf: // bin32, ext32, str32, array32, map32
			if i+1 < len(b) && b[i+1] != 0 {
				return true
			}
		}
	}
	return false
}

// A frame declaring more bytes than it holds is refused without
// allocating them: msgpack alone allocated the 3 GB this one declares.
func TestHugeDeclaredLengthAllocatesNothing(t *testing.T) {
	frame := []byte{0x82, 0xa7, 's', 'e', 'r', 'v', 'i', 'c', 'e', 0xa4, 'p', 'i', 'n', 'g', 0xa4, 'd', 'a', 't', 'a',
		0x81, 0xa1, 'x', 0xc6, 0xc0, 0, 0, 0} // data {"x": bin32 of 3 GB}, and nothing after
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	_, err := decodeMsg(frame, nil)
	runtime.ReadMemStats(&after)
	if err == nil {
		t.Fatal("a frame cut short was accepted")
	}
	if grew := after.TotalAlloc - before.TotalAlloc; grew > 1<<20 {
		t.Fatalf("decoding a %d-byte frame allocated %d bytes", len(frame), grew)
	}
}
