package transport

import (
	"io"
	"log"
	"log/slog"
	"sync/atomic"
)

// quietLogger silences zmq4's own logger: it prints from inside its accept
// and dial loops with no way to route lines to slog. What matters (a peer
// cut off, a bad handshake) is counted (Stats) and logged by the guard
// instead, to the logger given to SetLogger.
var quietLogger = log.New(io.Discard, "", 0)

// guardLog is where the guard reports the peers it refuses or cuts off.
var guardLog atomic.Pointer[slog.Logger]

// SetLogger sets the logger the guarded transport reports refused and
// cut-off peers to (by default, nowhere). The command line sets it once
// per process.
func SetLogger(l *slog.Logger) { guardLog.Store(l) }

// logViolation reports why a peer's connection was closed.
func logViolation(remote string, v *guardViolation) {
	if l := guardLog.Load(); l != nil {
		l.Warn("peer cut off", "peer", remote, "why", v.msg)
	}
}
