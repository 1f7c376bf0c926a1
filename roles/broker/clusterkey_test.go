package broker

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-zeromq/zmq4"

	"chat/clusterauth"
	"chat/internal/poll"
	"chat/proto"
	"chat/transport"
)

const testKey = "broker-test-cluster-key-0123456789"

// startKeyed starts a broker with cluster key key ("" : open), logging
// into the returned Output.
func startKeyed(t *testing.T, key string) (*Broker, *poll.Output) {
	t.Helper()
	out := &poll.Output{}
	cfg := DefaultConfig()
	cfg.Front, cfg.Back, cfg.PubIn, cfg.PubOut = "tcp://127.0.0.1:0", "tcp://127.0.0.1:0", "tcp://127.0.0.1:0", "tcp://127.0.0.1:0"
	cfg.ClusterKey = key
	b, err := Start(context.Background(), cfg, slog.New(slog.NewTextHandler(out, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b, out
}

// keyOf is the cluster key of a subtest and a member holding it: testKey
// when keyed, none ("" and nil) when the cluster runs open.
func keyOf(t *testing.T, keyed bool) (string, *clusterauth.Member) {
	t.Helper()
	if !keyed {
		return "", nil
	}
	member, err := clusterauth.New(testKey, clusterauth.Config{})
	if err != nil {
		t.Fatal(err)
	}
	return testKey, member
}

// fakeServer is a DEALER on the back end that heartbeats (with member's
// authenticator when member is not nil) and answers every request OK,
// counting them.
type fakeServer struct {
	sock   zmq4.Socket
	served atomic.Int64
}

func startFakeServer(t *testing.T, b *Broker, name string, member *clusterauth.Member) *fakeServer {
	t.Helper()
	sock, err := transport.DialSocket(t.Context(), zmq4.NewDealer, b.BackAddr(), time.Second, zmq4.WithID(zmq4.SocketIdentity(name+"-00000001")))
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeServer{sock: sock}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	t.Cleanup(func() { cancel(); sock.Close(); <-done })
	go func() { // heartbeats
		defer close(done)
		for ctx.Err() == nil {
			hb := proto.Envelope{Service: "heartbeat", Data: proto.Data{"user": name}}.Encode()
			if member != nil {
				hb, _ = member.Wrap(clusterauth.Heartbeat, hb)
			}
			sock.Send(zmq4.NewMsg(hb))
			select {
			case <-ctx.Done():
			case <-time.After(100 * time.Millisecond):
			}
		}
	}()
	go func() { // answers
		for {
			m, err := sock.Recv()
			if err != nil {
				return
			}
			if len(m.Frames) < 3 {
				continue // the broker's heartbeat
			}
			f.served.Add(1)
			ok := proto.Envelope{Service: proto.Login, Data: proto.Data{"status": proto.StatusSuccess, "by": name}}.Encode()
			frames := append(append([][]byte{}, m.Frames[:len(m.Frames)-1]...), ok)
			sock.Send(zmq4.NewMsgFrom(frames...))
		}
	}()
	return f
}

// Issue 11, measured: a fake DEALER heartbeating on the back end got half
// of the clients' requests, answered them OK and stored nothing. With a
// cluster key, its heartbeats are refused and logged, and every request
// goes to the server that proves the key. Open, it is routed to (the lab
// setting, where any server may join).
func TestForgedServerOnTheBackEnd(t *testing.T) {
	for _, keyed := range []bool{true, false} {
		t.Run(fmt.Sprintf("keyed=%v", keyed), func(t *testing.T) {
			key, member := keyOf(t, keyed)
			b, logs := startKeyed(t, key)
			real := startFakeServer(t, b, "real", member)
			forged := startFakeServer(t, b, "forged", nil)
			want := 2
			if keyed {
				want = 1
				poll.WaitFor(t, 10*time.Second, "the forged heartbeat to be refused", func() bool {
					return strings.Contains(logs.String(), "refused a heartbeat on the back end")
				})
			}
			poll.WaitFor(t, 10*time.Second, "the live servers", func() bool { return len(b.LiveServers()) == want })
			cl, err := transport.NewClient(transport.DefaultClientConfig(b.FrontAddr()), nil)
			if err != nil {
				t.Fatal(err)
			}
			defer cl.Close()
			for range 10 {
				if _, err := cl.Do(t.Context(), login(t)); err != nil {
					t.Fatal(err)
				}
			}
			switch {
			case keyed && (forged.served.Load() != 0 || real.served.Load() != 10):
				t.Fatalf("keyed: the forged server got %d requests, the real one %d; want 0 and 10", forged.served.Load(), real.served.Load())
			case !keyed && forged.served.Load() == 0:
				t.Fatal("open: the forged server got no request; an open cluster routes to any server")
			}
		})
	}
}

// A reply on the back end from a connection that never proved the key is
// refused: it cannot answer a request, nor make its sender known.
func TestKeyedBrokerIgnoresUnprovenReplies(t *testing.T) {
	b, logs := startKeyed(t, testKey)
	sock, err := transport.DialSocket(t.Context(), zmq4.NewDealer, b.BackAddr(), time.Second, zmq4.WithID(zmq4.SocketIdentity("sneaky-00000001")))
	if err != nil {
		t.Fatal(err)
	}
	defer sock.Close()
	sock.Send(zmq4.NewMsgFrom(seqFrame(1), []byte("client"), login(t)))
	poll.WaitFor(t, 10*time.Second, "the reply to be refused", func() bool {
		return strings.Contains(logs.String(), "refused a message on the back end")
	})
	if live := b.LiveServers(); len(live) != 0 {
		t.Fatalf("live %v: an unproven reply made its sender a server", live)
	}
}

// Issue 11, measured: a PUB connected to publish-in injected publications
// every subscriber showed. With a cluster key, only authenticated
// publications reach the subscribers, as the standard's two frames; the
// forged ones are dropped and logged. Open, the forged ones get through.
func TestForgedPublisherOnPublishIn(t *testing.T) {
	for _, keyed := range []bool{true, false} {
		t.Run(fmt.Sprintf("keyed=%v", keyed), func(t *testing.T) {
			key, member := keyOf(t, keyed)
			b, logs := startKeyed(t, key)
			sub, err := transport.DialSocket(t.Context(), zmq4.NewSub, b.PubOutAddr(), time.Second)
			if err != nil {
				t.Fatal(err)
			}
			defer sub.Close()
			sub.SetOption(zmq4.OptionSubscribe, "general")
			dial := func() zmq4.Socket {
				p, err := transport.DialSocket(t.Context(), zmq4.NewPub, b.PubInAddr(), time.Second)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { p.Close() })
				return p
			}
			genuine, forged := dial(), dial()
			got := make(chan [][]byte, 1000)
			go func() {
				for {
					m, err := sub.Recv()
					if err != nil {
						close(got)
						return
					}
					got <- m.Frames
				}
			}()
			var genuineSeen, forgedSeen int
			deadline := time.Now().Add(10 * time.Second)
			for genuineSeen < 5 && time.Now().Before(deadline) {
				forged.Send(zmq4.NewMsgFrom([]byte("general"), []byte("forged")))
				frames := [][]byte{[]byte("general"), []byte("genuine")}
				if member != nil {
					frames = append(frames, member.SealFrames(clusterauth.Publish, frames))
				}
				genuine.Send(zmq4.NewMsgFrom(frames...))
				select {
				case f := <-got:
					if len(f) != 2 {
						t.Fatalf("a subscriber got %d frames, want the standard's 2: %q", len(f), f)
					}
					switch string(f[1]) {
					case "genuine":
						genuineSeen++
					case "forged":
						forgedSeen++
					}
				case <-time.After(poll.Interval):
				}
			}
			if genuineSeen < 5 {
				t.Fatalf("only %d genuine publications reached the subscriber", genuineSeen)
			}
			if keyed {
				if forgedSeen != 0 {
					t.Fatalf("%d forged publications reached the subscriber", forgedSeen)
				}
				// The forged PUB's connection may have come up after the
				// genuine one's: its first publications went nowhere.
				poll.WaitFor(t, 10*time.Second, "the forged publications to be logged", func() bool {
					forged.Send(zmq4.NewMsgFrom([]byte("general"), []byte("forged")))
					return strings.Contains(logs.String(), "refused a publication on publish-in")
				})
				return
			}
			for forgedSeen == 0 && time.Now().Before(deadline) { // open: they get through
				forged.Send(zmq4.NewMsgFrom([]byte("general"), []byte("forged")))
				select {
				case f := <-got:
					if string(f[1]) == "forged" {
						forgedSeen++
					}
				case <-time.After(poll.Interval):
				}
			}
			if forgedSeen == 0 {
				t.Fatal("open: no forged publication got through; an open cluster takes any publisher")
			}
		})
	}
}

// Without a key the broker says, once, that the cluster runs open.
func TestOpenBrokerSaysSo(t *testing.T) {
	_, logs := startKeyed(t, "")
	if n := strings.Count(logs.String(), clusterauth.OpenWarning); n != 1 {
		t.Fatalf("the open-cluster warning was logged %d times, want 1:\n%s", n, logs)
	}
	_, logs = startKeyed(t, testKey)
	if strings.Contains(logs.String(), clusterauth.OpenWarning) {
		t.Fatal("a keyed broker said the cluster runs open")
	}
}
