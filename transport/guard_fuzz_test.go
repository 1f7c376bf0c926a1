package transport

import (
	"bufio"
	"bytes"
	"chat/internal/zmtptest"
	"encoding/binary"
	"errors"
	"io"
	"runtime"
	"testing"
)

// fuzzSink collects what would reach zmq4.
type fuzzSink struct{ out bytes.Buffer }

func (s *fuzzSink) emit(b []byte) error { s.out.Write(b); return nil }
func (s *fuzzSink) flush() error        { return nil }
func (s *fuzzSink) ready(props []zProp, _, _ byte) ([]byte, error) {
	return encodeReady(props), nil
}
func (s *fuzzSink) command(string, []byte) error { return nil }
func (s *fuzzSink) large(int64) error            { return nil }
func (s *fuzzSink) largeDone() error             { return nil }

// strictSink fails on anything zmq4 must never see.
type strictSink struct{}

func (strictSink) emit([]byte) error { return nil }
func (strictSink) flush() error      { return nil }
func (strictSink) ready(props []zProp, _, _ byte) ([]byte, error) {
	return encodeReady(props), nil
}
func (strictSink) large(int64) error { return nil }
func (strictSink) largeDone() error  { return nil }
func (strictSink) command(name string, _ []byte) error {
	return errors.New("command " + name + " leaked to zmq4")
}

func fuzzConfig() GuardConfig {
	c := DefaultGuardConfig()
	c.MaxFrame = 64 << 10
	c.LargeFrame = 16 << 10
	c.MaxMetadata = 4 << 10
	return c
}

// runParser feeds data to the inbound parser until it stops.
func runParser(t *testing.T, data []byte, sink zSink) error {
	p := newZParser(bufio.NewReaderSize(bytes.NewReader(data), 4096), fuzzConfig(), sink)
	for steps := 0; ; steps++ {
		if steps > len(data)+4 {
			t.Fatalf("parser makes no progress (%d steps on %d bytes)", steps, len(data))
		}
		if err := p.step(); err != nil {
			return err
		}
	}
}

func FuzzGuardStream(f *testing.F) {
	hs := append(zmtptest.Greeting(1, "NULL"), zmtptest.Frame(zmtptest.ReadyBody(zPropSocketType, "DEALER", zPropIdentity, "id"), true, false)...)
	seed := func(parts ...[]byte) []byte {
		b := append([]byte(nil), hs...)
		for _, p := range parts {
			b = append(b, p...)
		}
		return b
	}
	long := func(flags byte, n uint64) []byte { return binary.BigEndian.AppendUint64([]byte{flags | zFlagLong}, n) }
	f.Add(seed(zmtptest.Frame([]byte("hello"), false, true), zmtptest.Frame(bytes.Repeat([]byte("x"), 300), false, false)))
	f.Add(seed(zmtptest.Frame([]byte("\x04PING\x00\x0aabc"), true, false), zmtptest.Frame([]byte("\x04PONG"), true, false)))
	f.Add(seed(zmtptest.Frame([]byte("\x09SUBSCRIBEnews"), true, false), zmtptest.Frame([]byte("\x06CANCELnews"), true, false)))
	f.Add(seed(long(0, 1<<40)))
	f.Add(seed(long(0, 1<<63)))
	f.Add(seed(long(zFlagCommand, 1<<62)))
	f.Add(seed(zmtptest.Frame([]byte("\x05READY"), true, false)))
	f.Add([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
	f.Add(append(zmtptest.Greeting(0, "NULL"), zmtptest.Frame(zmtptest.ReadyBody("Identity", ""), true, false)...))
	f.Add(append(zmtptest.Greeting(0, "NULL"), zmtptest.Frame([]byte("\x05READY\x0bSocket-Type\x00\x00\xff\xffSUB"), true, false)...))
	f.Add(zmtptest.Greeting(0, "PLAIN"))

	f.Fuzz(func(t *testing.T, data []byte) {
		cfg := fuzzConfig()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		before := ms.TotalAlloc

		sink := &fuzzSink{}
		err := runParser(t, data, sink)
		if err == nil {
			t.Fatal("parser stopped without an error")
		}

		runtime.ReadMemStats(&ms)
		if alloc := ms.TotalAlloc - before; alloc > uint64(4*cfg.MaxFrame)+uint64(4*len(data))+1<<20 {
			t.Fatalf("parser allocated %d bytes for %d input bytes (MaxFrame %d)", alloc, len(data), cfg.MaxFrame)
		}

		// Whatever reached zmq4 is a clean ZMTP stream: re-parsing it finds
		// no violation and no command but READY.
		out := sink.out.Bytes()
		if len(out) > len(data)+64+8 {
			// canonical greeting/READY/headers may differ in size a little
			// (a long header for a short frame shrinks; SUBSCRIBE grows by 1)
			if len(out) > 2*len(data)+256 {
				t.Fatalf("output %d bytes for %d input bytes", len(out), len(data))
			}
		}
		err = runParser(t, out, strictSink{})
		var v *guardViolation
		if errors.As(err, &v) {
			t.Fatalf("zmq4 would have seen an invalid stream: %v", err)
		}
		if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Fatalf("re-parse: %v", err)
		}
	})
}
