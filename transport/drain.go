package transport

import "github.com/go-zeromq/zmq4"

// DrainClosed takes what is left in a closed ROUTER's queue. zmq4's
// per-connection reader blocks, forever, on a full queue no one reads:
// after Close, a peer that had sent more than the queue holds (a flood)
// would leave one goroutine behind per connection. Once closed, Recv
// picks at random between the queue and the socket's end, and a reader
// that gets past its blocked send sees the end and stops, so 64 ends in a
// row mean nothing is left.
func DrainClosed(sock zmq4.Socket) {
	for misses := 0; misses < 64; {
		if _, err := sock.Recv(); err != nil {
			misses++
		} else {
			misses = 0
		}
	}
}
