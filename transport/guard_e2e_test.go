package transport_test

// Issue 9, end to end: a request over the frame limit of old (1 MiB), sent
// by a raw ZMTP 3.1 client (what libzmq speaks), reaches a real server,
// directly and through a real broker, and is answered with the server's
// own error; the broker keeps its server.

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"chat/internal/clustertest"
	"chat/internal/zmtptest"
	"chat/proto"
	"chat/transport"
)

func TestLargeRequestAnsweredByServer(t *testing.T) {
	c := clustertest.Start(t, 1)
	lim := proto.DefaultLimits()
	hostPort := func(ep string) string { return strings.TrimPrefix(ep, "tcp://") }
	before := transport.Stats()
	for _, target := range []struct{ name, ep string }{
		{"server", c.Servers[0].Addr()},
		{"broker", c.Broker.FrontAddr()},
	} {
		for _, n := range []int{1<<20 + 100, 16 << 20} {
			t.Run(fmt.Sprintf("%s/%d", target.name, n), func(t *testing.T) {
				p := zmtptest.Dial(t, hostPort(target.ep))
				p.Handshake(t, 1, "REQ")
				start := time.Now()
				reply, err := p.Request(publish(n), 30*time.Second)
				if err != nil {
					t.Fatalf("no answer to a %d-byte request: %v", n, err)
				}
				env, err := proto.Decode(reply)
				if err != nil {
					t.Fatal(err)
				}
				want := fmt.Sprintf("request is %d bytes, the limit is %d", n, lim.MaxRequest)
				if env.Data["status"] != proto.StatusError || env.Data["description"] != want {
					t.Fatalf("reply %v, want the error %q", env.Data, want)
				}
				t.Logf("answered %q in %v", want, time.Since(start).Round(time.Millisecond))
				// the connection, and the broker's link to its server, go on
				if reply, err = p.Request(proto.Envelope{Service: proto.Users, Data: proto.Data{}}.Encode(), 10*time.Second); err != nil {
					t.Fatalf("next request: %v", err)
				}
				if env, err := proto.Decode(reply); err != nil || env.Data["status"] == proto.StatusError {
					t.Fatalf("next request answered %v (%v)", env.Data, err)
				}
			})
		}
	}
	if live := c.Broker.LiveServers(); len(live) != 1 {
		t.Fatalf("the broker lost its server: live %v", live)
	}
	if after := transport.Stats(); after.Refused() != before.Refused() {
		t.Fatalf("the guard cut connections off: %+v, before %+v", after, before)
	}
}

// publish is a publish request of exactly n bytes (n >= 128 KiB).
func publish(n int) []byte {
	enc := func(k int) []byte {
		return proto.Envelope{Service: "publish", Data: proto.Data{
			"user": "alice", "channel": "geral", "message": strings.Repeat("x", k),
		}}.Encode()
	}
	return enc(n - len(enc(1<<17)) + 1<<17)
}
