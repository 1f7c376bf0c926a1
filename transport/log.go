package transport

import (
	"io"
	"log"
)

// quietLogger silences zmq4's own logger: it prints from inside its accept
// and dial loops with no way to route lines to slog. What matters (a peer
// cut off, a bad handshake) is counted and logged by the guard instead.
var quietLogger = log.New(io.Discard, "", 0)
