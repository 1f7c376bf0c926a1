package transport

import (
	"fmt"
	"net"
	"strings"

	"github.com/go-zeromq/zmq4"
)

// Endpoint maps a user-facing endpoint ("tcp://host:port", as the CLI and
// the standard write it) onto the guarded transport, so every socket of the
// system gets its protections. Other schemes are returned unchanged.
func Endpoint(ep string) string {
	if rest, ok := strings.CutPrefix(ep, "tcp://"); ok {
		return Scheme + "://" + rest
	}
	return ep
}

// Public maps an endpoint back to the "tcp://" form users know, for logs.
func Public(ep string) string {
	if rest, ok := strings.CutPrefix(ep, Scheme+"://"); ok {
		return "tcp://" + rest
	}
	return ep
}

// BoundEndpoint returns the tcp:// endpoint a listening socket really got
// (the port chosen by the kernel for ":0"), with a wildcard host shown as
// 127.0.0.1 so that it can be dialed.
func BoundEndpoint(s zmq4.Socket) string { return DialableEndpoint(s.Addr()) }

// DialableEndpoint is BoundEndpoint for a listener's address.
func DialableEndpoint(a net.Addr) string {
	addr, ok := a.(*net.TCPAddr)
	if !ok || addr == nil {
		return ""
	}
	host := addr.IP.String()
	if addr.IP.IsUnspecified() {
		host = "127.0.0.1"
	}
	return fmt.Sprintf("tcp://%s", net.JoinHostPort(host, fmt.Sprint(addr.Port)))
}
