package transport

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-zeromq/zmq4"
)

// proxyPair is a Collector feeding a Fanout, as in the broker.
func proxyPair(t *testing.T) (pubIn, pubOut string) {
	t.Helper()
	out, err := ListenFanout(t.Context(), "tcp://127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { out.Close() })
	in, err := ListenCollector(t.Context(), "tcp://127.0.0.1:0", out.Publish)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { in.Close() })
	return DialableEndpoint(in.Addr()), DialableEndpoint(out.Addr())
}

// TestFanoutHonoursSubscriptions publishes through a Collector and a
// Fanout with zmq4 sockets: a subscriber gets the topics that start with
// its subscription, and nothing once it unsubscribes.
func TestFanoutHonoursSubscriptions(t *testing.T) {
	pubIn, pubOut := proxyPair(t)
	pub, err := DialSocket(t.Context(), zmq4.NewPub, pubIn, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	sub, err := DialSocket(t.Context(), zmq4.NewSub, pubOut, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	sub.SetOption(zmq4.OptionSubscribe, "geral")
	got := make(chan string, 100)
	go func() {
		for {
			m, err := sub.Recv()
			if err != nil {
				return
			}
			got <- string(m.Frames[0]) + "=" + string(m.Frames[1])
		}
	}()
	// Publish until the subscription has gone through.
	waitFor(t, 5*time.Second, "the subscription to reach the fanout", func() bool {
		pub.Send(zmq4.NewMsgFrom([]byte("geral"), []byte("warm-up")))
		select {
		case <-got:
			return true
		case <-time.After(50 * time.Millisecond):
			return false
		}
	})
	for len(got) > 0 {
		<-got
	}
	for _, topic := range []string{"outro", "geral2", "geral"} {
		pub.Send(zmq4.NewMsgFrom([]byte(topic), []byte("m")))
	}
	want := map[string]bool{"geral2=m": true, "geral=m": true} // prefix matching, as ZeroMQ
	for len(want) > 0 {
		select {
		case m := <-got:
			if !want[m] {
				t.Fatalf("received %q", m)
			}
			delete(want, m)
		case <-time.After(5 * time.Second):
			t.Fatalf("never received %v", want)
		}
	}
	sub.SetOption(zmq4.OptionUnsubscribe, "geral")
	waitFor(t, 5*time.Second, "the unsubscription to take effect", func() bool {
		for len(got) > 0 {
			<-got
		}
		pub.Send(zmq4.NewMsgFrom([]byte("geral"), []byte("after")))
		select {
		case <-got:
			return false
		case <-time.After(100 * time.Millisecond):
			return true
		}
	})
}

// TestProxyInteropWithLibzmq runs a libzmq PUB into the Collector and a
// libzmq SUB on the Fanout.
func TestProxyInteropWithLibzmq(t *testing.T) {
	py := requirePython(t)
	pubIn, pubOut := proxyPair(t)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	var subOut string
	var subErr error
	wg.Go(func() {
		subOut, subErr = runPython(t, py, 30*time.Second, `
import sys, zmq
s = zmq.Context().socket(zmq.SUB)
s.setsockopt(zmq.RCVTIMEO, 20000)
s.connect(sys.argv[1])
s.setsockopt(zmq.SUBSCRIBE, b"news")
topic, body = s.recv_multipart()
print(topic.decode(), body.decode())
`, pubOut)
		cancel()
	})
	pyPub := `
import sys, time, zmq
p = zmq.Context().socket(zmq.PUB)
p.connect(sys.argv[1])
for i in range(150):
    p.send_multipart([b"other", b"x"])
    p.send_multipart([b"news", b"hello"])
    time.sleep(0.02)
`
	pubOutText, _ := runPython(t, py, 15*time.Second, pyPub, pubIn)
	<-ctx.Done()
	wg.Wait()
	if subErr != nil || !strings.Contains(subOut, "news hello") {
		t.Fatalf("libzmq subscriber got %q (%v); publisher said %q", subOut, subErr, pubOutText)
	}
}
