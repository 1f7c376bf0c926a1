package transport

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/go-zeromq/zmq4"
)

// Issue 10: a client whose --sub endpoint does not answer gave no sign.
// Probe tells a ZeroMQ peer that answers from nothing at all.
func TestProbe(t *testing.T) {
	pub, err := ListenSocket(context.Background(), zmq4.NewPub, "tcp://127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	if err := Probe(context.Background(), BoundEndpoint(pub), time.Second); err != nil {
		t.Errorf("a PUB socket listens, Probe says %v", err)
	}

	free, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	nobody := "tcp://" + free.Addr().String()
	free.Close()
	err = Probe(context.Background(), nobody, 300*time.Millisecond)
	if want := "nothing answers at " + nobody + " (within 300ms)"; err == nil || err.Error() != want {
		t.Errorf("nothing listens: Probe says %v, want %q", err, want)
	}
	if err := Probe(context.Background(), "localhost:5558", time.Second); err == nil || !strings.Contains(err.Error(), "tcp://host:port") {
		t.Errorf("a malformed endpoint: Probe says %v", err)
	}
}

func TestCheckEndpoint(t *testing.T) {
	for _, ep := range []string{"tcp://127.0.0.1:5555", "tcp://*:5555", "tcp://[::1]:0", "tcp://server-1:5560", "tcp://localhost:65535"} {
		if err := CheckEndpoint(ep); err != nil {
			t.Errorf("CheckEndpoint(%q): %v", ep, err)
		}
	}
	for ep, want := range map[string]string{
		"localhost:5555":  `"localhost:5555" is not an endpoint: write it tcp://host:port, as in tcp://localhost:5555`,
		"5555":            `"5555" is not an endpoint: write it tcp://host:port, as in tcp://*:5555`,
		"udp://h:1":       `"udp://h:1" is not an endpoint: write it tcp://host:port, as in tcp://h:1`,
		"tcp://h":         `"tcp://h" is not an endpoint: write it tcp://host:port, as in tcp://localhost:5555`,
		"tcp://:5555":     `"tcp://:5555" is not an endpoint: write it tcp://host:port, as in tcp://localhost:5555`,
		"tcp://h:65536":   `"tcp://h:65536" has no valid port: write it tcp://host:port with a port from 0 to 65535`,
		"tcp://h:http":    `"tcp://h:http" has no valid port: write it tcp://host:port with a port from 0 to 65535`,
		"":                `"" is not an endpoint: write it tcp://host:port, as in tcp://localhost:5555`,
		Scheme + "://h:1": `"` + Scheme + `://h:1" is not an endpoint: write it tcp://host:port, as in tcp://h:1`,
	} {
		if err := CheckEndpoint(ep); err == nil || err.Error() != want {
			t.Errorf("CheckEndpoint(%q) = %v, want %q", ep, err, want)
		}
	}
}

// Issue 10: a port in use was reported under the internal scheme
// (could not listen to "gtcp://...").
func TestListenErrorNamesTheEndpointAsWritten(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	ep := "tcp://" + taken.Addr().String()
	_, err = ListenSocket(context.Background(), zmq4.NewRouter, ep)
	if want := "cannot listen on " + ep + ": the port is already in use (stop what uses it, or choose another port)"; err == nil || err.Error() != want {
		t.Errorf("port in use: %v, want %q", err, want)
	}
}
