package cluster

import (
	"strings"
	"testing"
	"time"

	"chat/proto"
	"chat/replication"
)

// A cluster message is a standard envelope whose data carries the fields,
// the timestamp and the clock; decoding gives them back.
func TestMessageRoundTrip(t *testing.T) {
	in := replication.Append{Epoch: 3, Leader: "server-3", Prev: replication.Pos{LSN: 9, Epoch: 2},
		Entries: []replication.Entry{{LSN: 10, Epoch: 3, Data: []byte("x")}}, Commit: 8, Seq: 5}
	frame := encodeMsg(replication.ServiceAppend, in, time.Unix(1_700_000_000, 0), 42)

	env, err := proto.Decode(frame)
	if err != nil || env.Service != replication.ServiceAppend {
		t.Fatalf("not a standard envelope: %v %v", env, err)
	}
	if env.Data.Clock() != 42 || env.Data["timestamp"] == nil {
		t.Fatalf("data lacks clock or timestamp: %v", env.Data)
	}
	var out replication.Append
	clk, err := decodeMsg(frame, &out)
	if err != nil || clk != 42 {
		t.Fatalf("decode: clock %d, %v", clk, err)
	}
	if out.Epoch != 3 || out.Leader != "server-3" || out.Prev != in.Prev || len(out.Entries) != 1 ||
		string(out.Entries[0].Data) != "x" || out.Commit != 8 || out.Seq != 5 {
		t.Fatalf("round trip: %+v", out)
	}
}

// An erro reply decodes as an error with its description; bytes that are
// not an envelope are an error, never a panic.
func TestDecodeRefusalsAndGarbage(t *testing.T) {
	refusal := proto.ErrorReply(ServicePing, "unknown service ping").Stamp(time.Now(), 7).Encode()
	clk, err := decodeMsg(refusal, nil)
	if err == nil || !strings.Contains(err.Error(), "unknown service") || clk != 7 {
		t.Fatalf("refusal: clock %d, err %v", clk, err)
	}
	for _, junk := range [][]byte{nil, {0xc1}, {0x92, 0x01, 0x02}, []byte("GET / HTTP/1.1")} {
		if _, err := decodeMsg(junk, &replication.Append{}); err == nil {
			t.Errorf("%q decoded without error", junk)
		}
	}
	if _, _, err := Unwrap(encodeMsg(ServiceForward, forwardMsg{}, time.Now(), 1)); err == nil {
		t.Error("a forward without a frame unwrapped")
	}
}

// Every timeout is checked; a server in a cluster needs an address peers
// can reach.
func TestConfigValidate(t *testing.T) {
	c := DefaultConfig("s1")
	if err := c.Validate(); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	bad := c
	bad.Reference, bad.Advertise = "tcp://ref:5559", ""
	if bad.Validate() == nil {
		t.Error("a cluster member without an advertised address was accepted")
	}
	bad = c
	bad.PingInterval = 0
	if bad.Validate() == nil {
		t.Error("a zero ping interval was accepted")
	}
}
