package health

import (
	"context"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/go-zeromq/zmq4"
	"github.com/vmihailenco/msgpack/v5"

	"chat/proto"
	"chat/roles/broker"
	"chat/transport"
)

// router binds a ROUTER on a free loopback port and answers every request
// with answer(body) (nil: no reply at all), framed as roles/server does.
// It returns the endpoint and a channel of the request bodies it read.
func router(t *testing.T, answer func(body []byte) []byte) (string, <-chan []byte) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	sock, err := transport.ListenSocket(ctx, zmq4.NewRouter, "tcp://127.0.0.1:0")
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	got := make(chan []byte, 16)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			msg, err := sock.Recv()
			if err != nil {
				if ctx.Err() != nil {
					return
				}
				continue
			}
			r, err := transport.SplitRoute(msg.Frames)
			if err != nil {
				continue
			}
			got <- r.Body
			if reply := answer(r.Body); reply != nil {
				sock.Send(r.Reply(reply))
			}
		}
	}()
	t.Cleanup(func() {
		cancel()
		sock.Close()
		<-done
	})
	return transport.BoundEndpoint(sock), got
}

func check(t *testing.T, ep string, timeout time.Duration) (Result, error, time.Duration) {
	t.Helper()
	start := time.Now()
	res, err := Check(context.Background(), Config{Endpoint: ep, Timeout: timeout})
	return res, err, time.Since(start)
}

func TestHealthyWhenAnErrorReplyComesBack(t *testing.T) {
	ep, got := router(t, func(body []byte) []byte {
		env, err := proto.Decode(body)
		if err != nil {
			return proto.ErrorReply("", err.Error()).Encode()
		}
		return proto.ErrorReply(env.Service, "unknown service "+env.Service).Stamp(time.Now(), 7).Encode()
	})
	res, err, _ := check(t, ep, 2*time.Second)
	if err != nil {
		t.Fatalf("check of a serving ROUTER failed: %v", err)
	}
	if res.Service != "status" || res.Status != proto.StatusError {
		t.Errorf("result %+v, want service status, status erro", res)
	}
	// The request is the one the brief fixes: {"service": "status", "data": {"timestamp", "clock"}}.
	env, err := proto.Decode(<-got)
	if err != nil {
		t.Fatal(err)
	}
	if env.Service != "status" || env.Data.Clock() != 1 {
		t.Errorf("request %+v, want service status with clock 1", env)
	}
	if _, ok := env.Data.Timestamp(); !ok {
		t.Errorf("request %+v has no timestamp", env)
	}
}

// A broker with no server behind it answers with an error of its own: that
// is healthy, the process is serving.
func TestHealthyBrokerWithoutServers(t *testing.T) {
	cfg := broker.DefaultConfig()
	cfg.Front, cfg.Back, cfg.PubIn, cfg.PubOut = "tcp://127.0.0.1:0", "tcp://127.0.0.1:0", "tcp://127.0.0.1:0", "tcp://127.0.0.1:0"
	b, err := broker.Start(context.Background(), cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	res, err, _ := check(t, b.FrontAddr(), 2*time.Second)
	if err != nil {
		t.Fatalf("check of a broker without servers failed: %v", err)
	}
	if res.Status != proto.StatusError {
		t.Errorf("result %+v, want the broker's own erro reply", res)
	}
}

func TestHealthyWithAnyMap(t *testing.T) {
	reply, _ := msgpack.Marshal(map[string]any{"anything": 1})
	ep, _ := router(t, func([]byte) []byte { return reply })
	if _, err, _ := check(t, ep, 2*time.Second); err != nil {
		t.Fatalf("a map without service is still an answer: %v", err)
	}
}

func TestUnhealthyWhenNothingListens(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ep := "tcp://" + l.Addr().String()
	l.Close() // the port is free now: nothing listens there

	_, err, took := check(t, ep, 2*time.Second)
	if err == nil {
		t.Fatal("check of a closed port succeeded")
	}
	if took > time.Second {
		t.Errorf("a refused connection took %v to report, want well under the 2s timeout", took)
	}
	if msg := err.Error(); !strings.Contains(msg, ep) || strings.Contains(msg, "\n") {
		t.Errorf("error %q should be one line naming %s", msg, ep)
	}
	t.Logf("%v (after %v)", err, took)
}

func TestUnhealthyWhenNoReplyInTime(t *testing.T) {
	ep, _ := router(t, func([]byte) []byte { return nil }) // reads, never answers
	_, err, took := check(t, ep, 300*time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), "did not answer within 300ms") {
		t.Fatalf("err = %v, want a timeout", err)
	}
	if took > 2*time.Second {
		t.Errorf("check took %v, want about its 300ms timeout", took)
	}
}

func TestUnhealthyWhenTheReplyIsNotAMap(t *testing.T) {
	for name, reply := range map[string][]byte{
		"string":    mustMarshal(t, "hello"),
		"array":     mustMarshal(t, []int{1, 2}),
		"garbage":   {0xc1},
		"trailing":  append(mustMarshal(t, map[string]any{"a": 1}), 0x01),
		"truncated": mustMarshal(t, map[string]any{"service": "status"})[:5],
	} {
		t.Run(name, func(t *testing.T) {
			ep, _ := router(t, func([]byte) []byte { return reply })
			if _, err, _ := check(t, ep, 2*time.Second); err == nil || !strings.Contains(err.Error(), "not a MessagePack map") {
				t.Fatalf("err = %v, want 'not a MessagePack map'", err)
			}
		})
	}
}

func TestConfigValidate(t *testing.T) {
	if err := DefaultConfig().Validate(); err != nil {
		t.Errorf("default config: %v", err)
	}
	for _, c := range []Config{{Timeout: time.Second}, {Endpoint: "tcp://localhost:1"}} {
		if err := c.Validate(); err == nil {
			t.Errorf("%+v accepted", c)
		}
	}
}

func mustMarshal(t *testing.T, v any) []byte {
	t.Helper()
	b, err := msgpack.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
