package transport

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"syscall"

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

// CheckEndpoint reports, in one sentence that shows the form expected, an
// endpoint not written tcp://host:port: a host (or * to listen on every
// interface) and a port number from 0 to 65535. Every endpoint flag of
// every role is checked with it before anything starts, so that a typo is
// a usage error at once rather than a connection that never succeeds.
func CheckEndpoint(ep string) error {
	rest, ok := strings.CutPrefix(ep, "tcp://")
	if !ok {
		return fmt.Errorf("%q is not an endpoint: write it tcp://host:port, as in %s", ep, suggestEndpoint(ep))
	}
	host, port, err := net.SplitHostPort(rest)
	if err != nil || host == "" {
		return fmt.Errorf("%q is not an endpoint: write it tcp://host:port, as in %s", ep, suggestEndpoint(rest))
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("%q has no valid port: write it tcp://host:port with a port from 0 to 65535", ep)
	}
	return nil
}

// suggestEndpoint guesses the endpoint a user meant by ep: "localhost:5555"
// is tcp://localhost:5555, a bare port "5555" is tcp://*:5555.
func suggestEndpoint(ep string) string {
	if _, rest, ok := strings.Cut(ep, "://"); ok {
		ep = rest // another scheme: keep what follows it
	}
	if _, err := strconv.Atoi(ep); err == nil {
		return "tcp://*:" + ep
	}
	if host, port, err := net.SplitHostPort(ep); err == nil {
		if host == "" {
			host = "localhost"
		}
		return "tcp://" + net.JoinHostPort(host, port)
	}
	return "tcp://localhost:5555"
}

// listenError explains why binding ep failed, naming the endpoint as the
// user wrote it (tcp://), never by the internal scheme.
func listenError(ep string, err error) error {
	if errors.Is(err, syscall.EADDRINUSE) {
		return &publicError{fmt.Sprintf("cannot listen on %s: the port is already in use (stop what uses it, or choose another port)", Public(ep)), err}
	}
	return &publicError{fmt.Sprintf("cannot listen on %s: %s", Public(ep), publicText(err)), err}
}

// dialError explains why connecting to ep failed, in the same way.
func dialError(ep string, err error) error {
	return &publicError{fmt.Sprintf("cannot connect to %s: %s", Public(ep), publicText(err)), err}
}

// publicText is err's text with the internal scheme written tcp://.
func publicText(err error) string {
	return strings.ReplaceAll(err.Error(), Scheme+"://", "tcp://")
}

// publicError is an error whose text speaks of endpoints as users write
// them; it still wraps the error it explains (errors.Is and As see it).
type publicError struct {
	text string
	err  error
}

func (e *publicError) Error() string { return e.text }
func (e *publicError) Unwrap() error { return e.err }

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
