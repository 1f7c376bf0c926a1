package cluster

import (
	"bytes"
	"testing"
	"time"

	"chat/replication"
)

// benchAppend is an Append as a busy coordinator sends it: a few client
// writes of about 120 bytes each.
func benchAppend() replication.Append {
	m := replication.Append{Epoch: 7, Leader: "server-3", Prev: replication.Pos{LSN: 1040, Epoch: 7}, Commit: 1039, Seq: 88123}
	for i := range 5 {
		m.Entries = append(m.Entries, replication.Entry{LSN: uint64(1041 + i), Epoch: 7, Data: bytes.Repeat([]byte{'a' + byte(i)}, 120)})
	}
	return m
}

var benchNow = time.Unix(1_700_000_000, 0)

func BenchmarkEncodeAppend(b *testing.B) {
	var m any = benchAppend() // as Outgoing.Msg holds it
	b.ReportAllocs()
	for b.Loop() {
		encodeMsg(replication.ServiceAppend, m, benchNow, 1_000_042)
	}
}

// BenchmarkDecodeAppend is the follower's side: serve decodes each Append.
func BenchmarkDecodeAppend(b *testing.B) {
	frame := encodeMsg(replication.ServiceAppend, benchAppend(), benchNow, 1_000_042)
	b.ReportAllocs()
	for b.Loop() {
		var m replication.Append
		if _, err := decodeMsg(frame, &m); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDecodeAppendReply is the coordinator's side: request reads the
// reply's clock, then sendReplication decodes it.
func BenchmarkDecodeAppendReply(b *testing.B) {
	reply := encodeMsg(replication.ServiceAppend, replication.AppendReply{From: "server-1", OK: true, Epoch: 7, Last: replication.Pos{LSN: 1045, Epoch: 7}, Seq: 88123}, benchNow, 1_000_043)
	b.ReportAllocs()
	for b.Loop() {
		decodeReply(b, reply)
	}
}

// decodeReply decodes an AppendReply as request and sendReplication do.
func decodeReply(b *testing.B, frame []byte) {
	m, err := readMsg(frame)
	if err != nil {
		b.Fatal(err)
	}
	var r replication.AppendReply
	if err := m.decode(&r); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkAppendRoundTrip is one Append and its reply, both ends.
func BenchmarkAppendRoundTrip(b *testing.B) {
	var m any = benchAppend()
	b.ReportAllocs()
	for b.Loop() {
		frame := encodeMsg(replication.ServiceAppend, m, benchNow, 1_000_042)
		var in replication.Append
		if _, err := decodeMsg(frame, &in); err != nil {
			b.Fatal(err)
		}
		reply := encodeMsg(replication.ServiceAppend, replication.AppendReply{From: "server-1", OK: true, Epoch: in.Epoch, Last: in.Entries[len(in.Entries)-1].Pos(), Seq: in.Seq}, benchNow, 1_000_043)
		decodeReply(b, reply)
	}
}
