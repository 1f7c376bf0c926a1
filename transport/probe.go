package transport

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/go-zeromq/zmq4"
)

// Probe reports whether a ZeroMQ peer answers at ep within timeout: it
// connects a SUB socket, which completes the ZMTP handshake, and closes
// it at once. A SUB socket on its own gives no sign when nothing answers
// (it just receives nothing), so a client probes its --sub endpoint once
// at start to tell its user. The error is one sentence naming ep.
func Probe(ctx context.Context, ep string, timeout time.Duration) error {
	if err := CheckEndpoint(ep); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	sock, err := DialSocket(ctx, zmq4.NewSub, ep, timeout)
	switch {
	case err == nil:
		return sock.Close()
	case errors.Is(ctx.Err(), context.Canceled):
		return fmt.Errorf("the check of %s was interrupted", ep)
	}
	return fmt.Errorf("nothing answers at %s (within %v)", ep, timeout)
}
