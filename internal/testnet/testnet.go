// Package testnet gives tests TCP endpoints that nothing listens on: for a
// role that must bind a port known in advance (to restart on the same
// one), or for a peer that must not answer. It imports nothing of the
// project, so any package's tests can use it.
package testnet

import (
	"net"
	"testing"
)

// FreeEndpoint returns a tcp:// endpoint of 127.0.0.1 on a port that was
// free a moment ago.
func FreeEndpoint(t testing.TB) string {
	t.Helper()
	return FreeEndpointOn(t, "127.0.0.1")
}

// FreeEndpointOn returns a tcp:// endpoint of host on a port that was free
// a moment ago.
func FreeEndpointOn(t testing.TB, host string) string {
	t.Helper()
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return "tcp://" + l.Addr().String()
}
