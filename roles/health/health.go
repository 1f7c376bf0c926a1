// Package health is the probe behind `chat health`: it sends one request
// to a role's request socket and reports whether a reply came back. It is
// what compose.yaml's healthchecks run inside the containers, which hold
// the static binary and nothing else (no shell, no curl).
//
// Any well-formed MessagePack map that comes back proves the process is
// serving, even an error reply: a broker with no server behind it answers
// with an error of its own, and a reference answers `status` with
// "unknown service". Only silence, a refused connection or bytes that are
// not a MessagePack map make the check fail.
package health

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"chat/proto"
	"chat/transport"
)

// Config configures one check.
type Config struct {
	// Endpoint is the request socket to probe (tcp://host:port).
	Endpoint string
	// Timeout bounds the whole check: connecting, sending, and the reply.
	Timeout time.Duration
}

// DefaultConfig probes a server on this host.
func DefaultConfig() Config {
	return Config{Endpoint: "tcp://localhost:5560", Timeout: 2 * time.Second}
}

// Validate reports a config that cannot work.
func (c Config) Validate() error {
	switch {
	case c.Endpoint == "":
		return errors.New("health: --endpoint is required")
	case c.Timeout <= 0:
		return errors.New("health: --timeout must be positive")
	}
	return nil
}

// dialRetries bounds how long a refused connection is retried. Nothing
// listening is an answer in itself (the process is not serving now), and
// the container runtime runs the check again anyway, so the check does not
// wait out its whole timeout for it.
const dialRetries = 200 * time.Millisecond

// Result is what a successful check saw.
type Result struct {
	Endpoint string
	Latency  time.Duration
	Service  string // the reply's "service", when it has one
	Status   string // the reply's data.status, when it has one
}

// Check sends one `status` request to cfg.Endpoint and waits for a reply
// at most cfg.Timeout. It returns an error, one sentence saying what went
// wrong, unless a well-formed MessagePack map came back.
func Check(ctx context.Context, cfg Config) (Result, error) {
	if err := cfg.Validate(); err != nil {
		return Result{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	client, err := transport.NewClient(transport.ClientConfig{
		Endpoints:   []string{cfg.Endpoint},
		Timeout:     cfg.Timeout + time.Second, // ctx ends first: one deadline for the whole check
		Attempts:    1,
		DialTimeout: min(cfg.Timeout, dialRetries),
	}, nil)
	if err != nil {
		return Result{}, err
	}
	req := proto.Envelope{Service: "status", Data: proto.Data{}}.Stamp(time.Now(), 1).Encode()

	type answer struct {
		reply []byte
		err   error
	}
	start := time.Now()
	done := make(chan answer, 1)
	// The request runs in its own goroutine so that the check ends at its
	// deadline even if a peer stalls in the ZMTP handshake (which the
	// transport bounds by its own, longer, handshake timeout).
	go func() {
		defer client.Close()
		reply, err := client.Do(ctx, req)
		done <- answer{reply, err}
	}()
	var a answer
	select {
	case a = <-done:
	case <-ctx.Done():
		a.err = ctx.Err()
	}
	if a.err != nil {
		return Result{}, describe(cfg, a.err)
	}
	res := Result{Endpoint: cfg.Endpoint, Latency: time.Since(start)}
	m, err := decodeMap(a.reply)
	if err != nil {
		return Result{}, fmt.Errorf("%s answered with something that is not a MessagePack map: %v", cfg.Endpoint, err)
	}
	res.Service, _ = m["service"].(string)
	if data, ok := m["data"].(map[string]any); ok {
		res.Status, _ = data["status"].(string)
	}
	return res, nil
}

// describe turns a failed request into one sentence.
func describe(cfg Config, err error) error {
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("%s did not answer within %v", cfg.Endpoint, cfg.Timeout)
	case errors.Is(err, context.Canceled):
		return fmt.Errorf("the check of %s was interrupted", cfg.Endpoint)
	case strings.Contains(err.Error(), "connection refused"):
		// The client reports the dial error as text, not as a wrapped error.
		return fmt.Errorf("nothing is listening on %s (connection refused)", cfg.Endpoint)
	}
	return fmt.Errorf("%s is not serving: %v", cfg.Endpoint, err)
}

// decodeMap checks that b is exactly one MessagePack map and returns it.
func decodeMap(b []byte) (map[string]any, error) {
	if len(b) == 0 {
		return nil, errors.New("empty reply")
	}
	r := bytes.NewReader(b)
	dec := msgpack.NewDecoder(r)
	n, err := dec.DecodeMapLen()
	if err != nil {
		return nil, err
	}
	if n < 0 {
		return nil, errors.New("nil instead of a map")
	}
	m := make(map[string]any, min(n, 64))
	for range n {
		k, err := dec.DecodeInterface()
		if err != nil {
			return nil, err
		}
		v, err := dec.DecodeInterface()
		if err != nil {
			return nil, err
		}
		if s, ok := k.(string); ok {
			m[s] = v
		}
	}
	if r.Len() != 0 {
		return nil, fmt.Errorf("%d bytes after the map", r.Len())
	}
	return m, nil
}
