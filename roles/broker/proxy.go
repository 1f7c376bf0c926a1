package broker

import (
	"context"
	"log/slog"

	"github.com/go-zeromq/zmq4"
)

// proxy copies every publication from pubIn to pubOut until ctx ends. pubIn
// is a bound SUB subscribed to everything: zmq4 sends that subscription to
// publishers that connect (or reconnect) later, which its XSUB would not.
// pubOut is an XPUB, which keeps each subscriber's topics and sends it only
// the matching publications. A publisher that disconnects shows up as an
// error or an empty message; both are skipped (zmq4's NewProxy forwards the
// empty message and panics).
func proxy(ctx context.Context, log *slog.Logger, pubIn, pubOut zmq4.Socket) {
	for {
		msg, err := pubIn.Recv()
		if ctx.Err() != nil {
			return
		}
		if err != nil || len(msg.Frames) < 2 {
			continue
		}
		if err := pubOut.Send(msg); err != nil {
			log.Warn("publication not forwarded", "topic", string(msg.Frames[0]), "err", err)
		}
	}
}
