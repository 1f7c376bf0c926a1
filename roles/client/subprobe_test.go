package client

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/go-zeromq/zmq4"

	"chat/internal/testnet"
	"chat/transport"
)

// Issue 10: a --sub endpoint where nothing answers gave no sign at all;
// the client now says so once, at start.
func TestClientSaysWhenItsSubEndpointDoesNotAnswer(t *testing.T) {
	nobody := testnet.FreeEndpoint(t)
	pub, err := transport.ListenSocket(context.Background(), zmq4.NewPub, "tcp://127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()

	for sub, warned := range map[string]bool{nobody: true, transport.BoundEndpoint(pub): false} {
		cfg := DefaultConfig()
		cfg.Servers, cfg.Sub, cfg.DialTimeout = []string{nobody}, sub, 300*time.Millisecond
		var out bytes.Buffer
		if err := Run(context.Background(), cfg, strings.NewReader("/quit\n"), &out, nil); err != nil {
			t.Fatal(err)
		}
		want := "nothing answers at " + sub + " (within 300ms): posts and direct messages will not show"
		if got := strings.Contains(out.String(), want); got != warned {
			t.Errorf("--sub %s: warned %v, want %v:\n%s", sub, got, warned, out.String())
		}
	}
}
