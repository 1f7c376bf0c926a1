package client

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/go-zeromq/zmq4"

	"chat/internal/poll"
	"chat/proto"
	"chat/transport"
)

// inbox collects what a Subscriber delivers.
type inbox struct {
	mu  sync.Mutex
	got []proto.Received
}

func (b *inbox) deliver(r proto.Received) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.got = append(b.got, r)
}

// received returns a copy of what arrived so far.
func (b *inbox) received() []proto.Received {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]proto.Received(nil), b.got...)
}

// topics returns how many publications of each topic arrived.
func (b *inbox) topics() map[string]int {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := map[string]int{}
	for _, r := range b.got {
		n[r.Topic]++
	}
	return n
}

// publisher stands in for the broker's pub-out socket: an XPUB that
// honours subscriptions by prefix, as ZeroMQ does.
func publisher(t *testing.T, ctx context.Context, ep string) zmq4.Socket {
	t.Helper()
	sock, err := transport.ListenSocket(ctx, zmq4.NewXPub, ep)
	if err != nil {
		t.Fatal(err)
	}
	return sock
}

func post(channel, text string) zmq4.Msg {
	p := proto.PostPublication(proto.Post{Channel: channel, User: "alice", Text: text, Timestamp: time.Now(), Clock: 7})
	return zmq4.NewMsgFrom(p.Frames()...)
}

// publishUntil publishes msgs every few milliseconds until cond holds.
func publishUntil(t *testing.T, pub zmq4.Socket, cond func() bool, msgs ...zmq4.Msg) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("publications never arrived")
		}
		for _, m := range msgs {
			pub.Send(m)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestSubscriberMatchesTopicsExactly(t *testing.T) {
	ctx := t.Context()
	pub := publisher(t, ctx, "tcp://127.0.0.1:0")
	defer pub.Close()
	var box inbox
	sub := NewSubscriber(ctx, SubscriberConfig{Endpoint: transport.BoundEndpoint(pub), ReconnectDelay: 50 * time.Millisecond}, box.deliver, nil)
	defer sub.Close()
	sub.Subscribe("geral")

	// geral2 goes out first every time: had the prefix match let it
	// through, it would arrive before geral.
	publishUntil(t, pub, func() bool { return box.topics()["geral"] > 0 }, post("geral2", "wrong"), post("geral", "right"))
	if n := box.topics()["geral2"]; n != 0 {
		t.Fatalf("subscribed to geral, got %d publications of geral2", n)
	}
	if r := box.received()[0]; r.Post == nil || r.Post.Text != "right" || r.Clock != 7 {
		t.Fatalf("delivered %+v", r)
	}

	sub.Unsubscribe("geral")
	sub.Subscribe("other")
	publishUntil(t, pub, func() bool { return box.topics()["other"] > 0 }, post("geral", "late"), post("other", "x"))
	for _, r := range box.received() {
		if r.Topic == "geral" && r.Post.Text == "late" {
			t.Fatal("a publication of an unsubscribed topic was delivered")
		}
	}
}

func TestSubscriberSurvivesBrokerRestart(t *testing.T) {
	ctx := t.Context()
	pub := publisher(t, ctx, "tcp://127.0.0.1:0")
	ep := transport.BoundEndpoint(pub)
	var box inbox
	sub := NewSubscriber(ctx, SubscriberConfig{Endpoint: ep, ReconnectDelay: 50 * time.Millisecond}, box.deliver, nil)
	defer sub.Close()
	sub.Subscribe("geral")
	publishUntil(t, pub, func() bool { return box.topics()["geral"] > 0 }, post("geral", "before"))

	pub.Close() // the broker goes away and comes back on the same endpoint
	pub = publisher(t, ctx, ep)
	defer pub.Close()
	before := box.topics()["geral"]
	publishUntil(t, pub, func() bool { return box.topics()["geral"] > before }, post("geral", "after"))
}

func TestSubscriberStartsWithoutBroker(t *testing.T) {
	// Nothing listens: NewSubscriber must still return, and Close must
	// stop the dialing goroutine.
	sub := NewSubscriber(t.Context(), SubscriberConfig{Endpoint: "tcp://127.0.0.1:1", ReconnectDelay: 50 * time.Millisecond}, func(proto.Received) {}, nil)
	sub.Subscribe("geral")
	done := make(chan struct{})
	go func() { sub.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not stop a subscriber waiting for the broker")
	}
}

// TestSubscriberReportsState: State hears of each connection and each
// loss once, not of every attempt to reconnect.
func TestSubscriberReportsState(t *testing.T) {
	ctx := t.Context()
	pub := publisher(t, ctx, "tcp://127.0.0.1:0")
	ep := transport.BoundEndpoint(pub)
	var mu sync.Mutex
	var states []bool
	got := func() []bool {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(states)
	}
	var box inbox
	sub := NewSubscriber(ctx, SubscriberConfig{Endpoint: ep, ReconnectDelay: 10 * time.Millisecond, State: func(up bool) {
		mu.Lock()
		defer mu.Unlock()
		states = append(states, up)
	}}, box.deliver, nil)
	defer sub.Close()
	sub.Subscribe("geral")
	publishUntil(t, pub, func() bool { return box.topics()["geral"] > 0 }, post("geral", "before"))

	pub.Close()
	poll.WaitFor(t, 10*time.Second, "the loss to be reported", func() bool { return len(got()) == 2 })
	pub = publisher(t, ctx, ep)
	defer pub.Close()
	before := box.topics()["geral"]
	publishUntil(t, pub, func() bool { return box.topics()["geral"] > before }, post("geral", "after"))
	if s := got(); !slices.Equal(s, []bool{true, false, true}) {
		t.Fatalf("State was told %v, want [true false true]", s)
	}
}
