package e2e

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package if goroutines outlive the tests: every role
// must stop all of its goroutines on Close. The one known leak is zmq4's:
// each closed PUB or XPUB socket leaves one goroutine behind (ZMQ4-NOTES).
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		goleak.IgnoreAnyFunction("github.com/go-zeromq/zmq4.(*pubMWriter).run"),
	)
}
