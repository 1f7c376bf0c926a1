// Package e2e holds the end-to-end tests: whole topologies (broker,
// servers, clients) started inside the test process on 127.0.0.1:0 ports,
// the interoperability test against a libzmq client written in Python, and
// the fault tests that kill real processes.
package e2e
