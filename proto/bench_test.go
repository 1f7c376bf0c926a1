package proto

import (
	"testing"
	"time"
)

func BenchmarkParseRequest(b *testing.B) {
	f := frame(b, req("publish", map[string]any{"user": "bench-1", "channel": "bench", "message": "a message of a typical length, some sixty bytes long", "timestamp": 1700000000, "clock": 1}))
	lim := DefaultLimits()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseRequest(f, lim); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkEncodeReply(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		Envelope{Service: Publish, Data: Data{"status": StatusOK}}.Stamp(time.Unix(1, 0), 5).Encode()
	}
}
