package e2e

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"chat/internal/clustertest"
	"chat/proto"
	"chat/transport"
)

// cluster is a broker and servers running in the test process.
type cluster = clustertest.Cluster

// startCluster starts a broker and n servers (see clustertest.Start).
func startCluster(t testing.TB, n int) *cluster { return clustertest.Start(t, n) }

// newClient returns a request client for the endpoints with short timeouts.
func newClient(t testing.TB, endpoints ...string) *transport.Client {
	t.Helper()
	cfg := transport.DefaultClientConfig(endpoints...)
	cfg.Timeout = time.Second
	c, err := transport.NewClient(cfg, clustertest.Log())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

var clockOfTests atomic.Uint64

// call sends one request and returns the reply's data. It fails the test
// only when no reply comes at all.
func call(t testing.TB, c *transport.Client, service string, data proto.Data) proto.Data {
	t.Helper()
	env, err := callEnv(c, service, data)
	if err != nil {
		t.Fatalf("%s: %v", service, err)
	}
	if env.Service != service {
		t.Fatalf("%s: reply is for service %q", service, env.Service)
	}
	return env.Data
}

func callEnv(c *transport.Client, service string, data proto.Data) (proto.Envelope, error) {
	if data == nil {
		data = proto.Data{}
	}
	env := proto.Envelope{Service: service, Data: data}.Stamp(time.Now(), clockOfTests.Add(1))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	reply, err := c.Do(ctx, env.Encode())
	if err != nil {
		return proto.Envelope{}, err
	}
	return proto.Decode(reply)
}

// publishUntilReceived calls publish until a publication reaches got (a
// clustertest.Subscribe): the subscription has then reached the broker.
// It returns the first publication's frames and drops the others received
// by then, so that the test reads only what it publishes next.
func publishUntilReceived(t testing.TB, got <-chan [][]byte, publish func()) [][]byte {
	t.Helper()
	var first [][]byte
	clustertest.WaitFor(t, 10*time.Second, "a publication to reach the subscriber", func() bool {
		publish()
		select {
		case first = <-got:
			return true
		case <-time.After(100 * time.Millisecond):
			return false
		}
	})
	for len(got) > 0 {
		<-got
	}
	return first
}
