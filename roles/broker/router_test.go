package broker

import (
	"bytes"
	"context"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/go-zeromq/zmq4"

	"chat/internal/zmtptest"
	"chat/proto"
	"chat/transport"
)

func startBroker(t *testing.T) *Broker {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Front, cfg.Back, cfg.PubIn, cfg.PubOut = "tcp://127.0.0.1:0", "tcp://127.0.0.1:0", "tcp://127.0.0.1:0", "tcp://127.0.0.1:0"
	b, err := Start(context.Background(), cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func hostPort(ep string) string {
	_, hp, _ := strings.Cut(ep, "://")
	return hp
}

func login(t *testing.T) []byte {
	return proto.Envelope{Service: proto.Login, Data: proto.Data{"user": "u"}}.Stamp(time.Now(), 1).Encode()
}

// Issue 9: a server's goodbye takes it out at once, and the broker's
// answer to it comes after every request routed there.
func TestGoodbyeIsAcknowledged(t *testing.T) {
	b := startBroker(t)
	sock, err := transport.DialSocket(t.Context(), zmq4.NewDealer, b.BackAddr(), time.Second, zmq4.WithID(zmq4.SocketIdentity("leaver-00000001")))
	if err != nil {
		t.Fatal(err)
	}
	defer sock.Close()
	hb := proto.Envelope{Service: "heartbeat", Data: proto.Data{"user": "leaver"}}.Encode()
	sock.Send(zmq4.NewMsg(hb))
	waitFor(t, "the server to join", func() bool { return len(b.LiveServers()) == 1 })
	bye := proto.Envelope{Service: "heartbeat", Data: proto.Data{"user": "leaver", "bye": true}}.Encode()
	acked := func() {
		t.Helper()
		for {
			m, err := sock.Recv()
			if err != nil {
				t.Fatal(err)
			}
			if len(m.Frames) != 1 {
				continue
			}
			if env, _ := proto.Decode(m.Frames[0]); env.Data["bye"] == true {
				return
			}
		}
	}
	sock.Send(zmq4.NewMsg(bye))
	acked()
	if live := b.LiveServers(); len(live) != 0 {
		t.Fatalf("live %v after the goodbye was acknowledged", live)
	}
	// A heartbeat on its way does not bring it back: the broker reads in
	// order, so once a second goodbye is answered, the heartbeat was read.
	sock.Send(zmq4.NewMsg(hb))
	sock.Send(zmq4.NewMsg(bye))
	acked()
	if live := b.LiveServers(); len(live) != 0 {
		t.Fatalf("live %v: a heartbeat after the goodbye brought the server back", live)
	}
}

// Issue 9: a standard REP server (no heartbeats) behind the broker: the
// back end introduces itself as a DEALER (ZMTP lets REP talk to REQ and
// DEALER only), sends [seq][""][body] and takes the echoed envelope back;
// a REP that loses the envelope is answered in order.
func TestREPServerFraming(t *testing.T) {
	b := startBroker(t)
	rep := zmtptest.Dial(t, hostPort(b.BackAddr()))
	rep.Write(t, zmtptest.Handshake(1, "REP"))
	if _, err := io.ReadFull(rep.R, make([]byte, 64)); err != nil {
		t.Fatal(err)
	}
	ready, err := rep.ReadFrame()
	if err != nil || !ready.Cmd || !bytes.Contains(ready.Body, []byte("DEALER")) {
		t.Fatalf("READY %q %v: want the back end to say DEALER to a REP", ready.Body, err)
	}
	waitFor(t, "the REP server to join", func() bool { return len(b.LiveServers()) == 1 })

	cfg := transport.DefaultClientConfig(b.FrontAddr())
	cfg.Attempts = 1
	cl, err := transport.NewClient(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	for _, answer := range []string{"envelope", "delimiter only", "body only"} {
		done := make(chan []byte, 1)
		go func() {
			reply, _ := cl.Do(context.Background(), login(t))
			done <- reply
		}()
		frames, err := rep.ReadMessage()
		if err != nil {
			t.Fatal(err)
		}
		if len(frames) != 3 || len(frames[0]) != 8 || len(frames[1]) != 0 {
			t.Fatalf("the REP got %q, want [seq][\"\"][body]", frames)
		}
		body := proto.Envelope{Service: proto.Login, Data: proto.Data{"status": proto.StatusSuccess, "by": "rep"}}.Encode()
		var out []byte
		switch answer {
		case "envelope": // what a REP does
			out = append(zmtptest.Frame(frames[0], false, true), zmtptest.Frame(nil, false, true)...)
		case "delimiter only":
			out = zmtptest.Frame(nil, false, true)
		}
		rep.Write(t, append(out, zmtptest.Frame(body, false, false)...))
		env, err := proto.Decode(<-done)
		if err != nil || env.Data["by"] != "rep" {
			t.Fatalf("REP answering with %s: client got %v %v", answer, env, err)
		}
	}
	rep.Conn.Close()
	waitFor(t, "the REP server to be taken out when it disconnects", func() bool { return len(b.LiveServers()) == 0 })
}

func TestConfigReplyMustFitTheTransport(t *testing.T) {
	cfg := DefaultConfig()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	cfg.MaxReply = int(transport.CurrentGuardConfig().MaxFrame) + 1
	if cfg.Validate() == nil {
		t.Fatal("a reply limit over the transport's frame limit was accepted")
	}
	cfg = DefaultConfig()
	cfg.PeerCheckInterval, cfg.MaxReply = 0, 0 // zero: the defaults (a Config built field by field)
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
}
