// Command subscribe is .ci/compose-smoke's eye on the bus: it subscribes to
// the broker's publish-out socket from the host and prints one line per
// publication until --for runs out, so the script can grep for coordinator
// announcements (topic `servers`) and for the bots' posts.
//
//	go run ./.ci/subscribe/main.go --sub tcp://localhost:5558 --topic servers --for 60s
//
// Lines, flushed as they come, each ending with the host's time of
// receipt (at=, milliseconds), for the script's failure reports:
//
//	subscribed tcp://localhost:5558 servers
//	servers coordinator=server-2 clock=41 at=09:39:15.777
//	post channel=canal-1a2b3c user=bot-4d5e6f id=17 text=... at=09:39:15.801
//	direct to=alice from=bob id=3 text=... at=09:39:16.002
//
// With no --topic it subscribes to every topic. It is not part of the
// module's packages (a directory starting with a dot is skipped by ./...).
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/go-zeromq/zmq4"

	"chat/proto"
	"chat/transport"
)

func main() {
	sub := flag.String("sub", "tcp://localhost:5558", "the broker's publish-out endpoint")
	topics := flag.String("topic", "", "comma-separated topics, matched exactly (empty: every topic)")
	run := flag.Duration("for", time.Minute, "how long to listen before exiting 0")
	flag.Parse()

	ctx, cancel := context.WithTimeout(context.Background(), *run)
	defer cancel()
	want := map[string]bool{}
	for _, t := range strings.Split(*topics, ",") {
		if t = strings.TrimSpace(t); t != "" {
			want[t] = true
		}
	}
	// Reconnect whenever the broker goes away, until the time is up.
	for ctx.Err() == nil {
		if err := listen(ctx, *sub, want); err != nil && ctx.Err() == nil {
			fmt.Fprintln(os.Stderr, "subscribe:", err)
			select {
			case <-ctx.Done():
			case <-time.After(500 * time.Millisecond):
			}
		}
	}
}

// listen connects once and prints publications until the connection is
// lost or ctx ends.
func listen(ctx context.Context, ep string, want map[string]bool) error {
	sock, err := transport.DialSocket(ctx, zmq4.NewSub, ep, 5*time.Second)
	if err != nil {
		return err
	}
	lctx, stop := context.WithCancel(ctx)
	defer stop()
	go func() { <-lctx.Done(); sock.Close() }() // unblocks Recv when the time is up
	var names []string
	for t := range want {
		names = append(names, t)
	}
	if len(names) == 0 {
		names = []string{""} // ZeroMQ: the empty prefix matches every topic
	}
	for _, t := range names {
		if err := sock.SetOption(zmq4.OptionSubscribe, t); err != nil {
			return fmt.Errorf("subscribe to %q: %w", t, err)
		}
	}
	fmt.Printf("subscribed %s %s\n", ep, strings.Join(names, ","))
	for {
		msg, err := sock.Recv()
		if err != nil {
			return fmt.Errorf("receive: %w", err)
		}
		if len(msg.Frames) == 0 || len(want) > 0 && !want[string(msg.Frames[0])] {
			continue // ZeroMQ filters by prefix: geral2 reaches a geral subscriber
		}
		r, err := proto.DecodePublication(msg.Frames)
		if err != nil {
			fmt.Printf("unreadable topic=%s err=%q\n", msg.Frames[0], err)
			continue
		}
		at := time.Now().Format("15:04:05.000")
		switch {
		case r.Topic == proto.ServersTopic:
			fmt.Printf("servers coordinator=%s clock=%d at=%s\n", r.Coordinator, r.Clock, at)
		case r.Direct != nil:
			fmt.Printf("direct to=%s from=%s id=%d text=%q at=%s\n", r.Direct.To, r.Direct.From, r.Direct.ID, r.Direct.Text, at)
		case r.Post != nil:
			fmt.Printf("post channel=%s user=%s id=%d text=%q at=%s\n", r.Post.Channel, r.Post.User, r.Post.ID, r.Post.Text, at)
		}
	}
}
