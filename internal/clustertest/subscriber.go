package clustertest

import (
	"context"
	"testing"
	"time"

	"github.com/go-zeromq/zmq4"

	"chat/transport"
)

// Subscribe connects a SUB socket, as a client of the standard would, to
// the broker's publish-out pubOut, subscribed to topics (none: every
// topic). It returns the frames of every message received, in order; the
// channel is closed when the test ends.
func Subscribe(t testing.TB, pubOut string, topics ...string) <-chan [][]byte {
	t.Helper()
	got := make(chan [][]byte, 1000)
	receive(t, pubOut, topics, func(ctx context.Context, frames [][]byte) {
		select {
		case got <- frames:
		case <-ctx.Done():
		}
	}, func() { close(got) })
	return got
}

// Eavesdrop is Subscribe for a test that reads what goes over the wire: it
// writes every frame received, one a line, into the returned Output.
func Eavesdrop(t testing.TB, pubOut string, topics ...string) *Output {
	t.Helper()
	var heard Output
	receive(t, pubOut, topics, func(_ context.Context, frames [][]byte) {
		for _, f := range frames {
			heard.Write(append(f, '\n'))
		}
	}, func() {})
	return &heard
}

// receive dials the SUB socket and hands the frames of every message to
// each, from one goroutine, until the test ends; then it calls ended.
func receive(t testing.TB, pubOut string, topics []string, each func(context.Context, [][]byte), ended func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	sub, err := transport.DialSocket(ctx, zmq4.NewSub, pubOut, 2*time.Second)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	if len(topics) == 0 {
		topics = []string{""}
	}
	for _, topic := range topics {
		if err := sub.SetOption(zmq4.OptionSubscribe, topic); err != nil {
			cancel()
			sub.Close()
			t.Fatal(err)
		}
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer ended()
		for {
			m, err := sub.Recv()
			if err != nil {
				return
			}
			each(ctx, m.Frames)
		}
	}()
	t.Cleanup(func() { cancel(); sub.Close(); <-done })
}
