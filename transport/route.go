package transport

import (
	"errors"

	"github.com/go-zeromq/zmq4"
)

// Routed is one request read from a ROUTER (or from a DEALER behind the
// broker): the routing frames that must go back with the reply, and the body.
type Routed struct {
	Route [][]byte // every frame before the body, including the empty delimiter
	Body  []byte
}

// ErrNoBody is returned for a message with no body frame.
var ErrNoBody = errors.New("message has no body frame")

// SplitRoute separates routing frames from the body: the body is the last
// frame, everything before it is route. A REQ peer puts an empty delimiter
// before the body; a DEALER peer may not, and both are answered.
func SplitRoute(frames [][]byte) (Routed, error) {
	if len(frames) < 2 {
		return Routed{}, ErrNoBody
	}
	n := len(frames) - 1
	return Routed{Route: frames[:n:n], Body: frames[n]}, nil
}

// Reply builds the message that answers r with body.
func (r Routed) Reply(body []byte) zmq4.Msg {
	frames := make([][]byte, 0, len(r.Route)+1)
	frames = append(frames, r.Route...)
	return zmq4.NewMsgFrom(append(frames, body)...)
}
