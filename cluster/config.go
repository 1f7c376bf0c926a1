// Package cluster is a server's part in the cluster: it registers with
// the reference, keeps one request client per peer, and runs the three
// algorithms of the cluster over the network — the Bully election
// (package election), Berkeley clock synchronisation (clock.Berkeley) and
// replication (package replication) — which are pure state machines. This
// package is their thin adapter: sockets, goroutines and the real clock
// live here, the decisions there.
//
// Files: node.go runs the machines and answers the cluster's requests;
// reference.go keeps the registration and the peer list; berkeley.go runs
// clock rounds; wire.go encodes the messages; storelog.go is
// replication.Log over the server's store; state.go keeps what must
// survive a restart (rank, promise, peers).
package cluster

import (
	"errors"
	"time"

	"chat/clock"
	"chat/election"
	"chat/replication"
)

// Config configures a server's part in the cluster. Every interval and
// timeout is here; the algorithms' own are in Election and Replication.
type Config struct {
	Name      string // this server's name
	Advertise string // the endpoint peers use to reach this server
	Reference string // the reference registry ("" : this server runs alone)
	BrokerSub string // broker's publish-out, to hear announcements on "servers" ("" : none)
	DataDir   string // where the cluster state file is kept
	// Replicas is the number of servers of the cluster: a write is
	// acknowledged once Replicas/2+1 of them hold it. 1 when Reference is "".
	Replicas int
	// AbstainUntil, when not 0, keeps this server out of elections (it
	// neither campaigns nor promises) until its log reaches that LSN: set
	// after its store was repaired, while it copies back what it lost.
	AbstainUntil uint64

	Election    election.Config    // Bully timeouts (Self and Rank are filled in)
	Replication replication.Config // replication timeouts (Self and Replicas are filled in)
	Berkeley    clock.BerkeleyConfig

	TickInterval      time.Duration // how often the machines' timeouts are checked (default 50ms)
	PingInterval      time.Duration // how often a server checks that its coordinator is alive (default 250ms)
	PeerTimeout       time.Duration // how long one request to a peer waits for its reply (default 500ms)
	ForwardTimeout    time.Duration // how long a write forwarded to the coordinator may take (default 3s)
	CommitTimeout     time.Duration // how long a write waits to be replicated before the client is told to retry (default 3s)
	ReadTimeout       time.Duration // how long a read waits for this server to catch up (default 2s)
	ReferenceInterval time.Duration // how often the reference gets a heartbeat and is asked for the list (default 1s)
	ReferenceTimeout  time.Duration // how long one request to the reference waits (default 1s)
	BerkeleyInterval  time.Duration // the coordinator syncs clocks at least this often (default 5s)
	BerkeleyEvery     int           // ... and after this many requests handled (the standard's 10)
	BerkeleyMinGap    time.Duration // but never two rounds closer than this (default 500ms)
	SubReconnect      time.Duration // delay before re-dialing the broker's publish-out (default 500ms)
}

// DefaultConfig returns the defaults for server name in a cluster of
// three.
func DefaultConfig(name string) Config {
	return Config{
		Name:              name,
		Replicas:          3,
		DataDir:           "./data",
		Election:          election.DefaultConfig(name, 0),
		Replication:       replication.DefaultConfig(name, 3),
		Berkeley:          berkeleyDefaults(),
		TickInterval:      50 * time.Millisecond,
		PingInterval:      250 * time.Millisecond,
		PeerTimeout:       500 * time.Millisecond,
		ForwardTimeout:    3 * time.Second,
		CommitTimeout:     3 * time.Second,
		ReadTimeout:       2 * time.Second,
		ReferenceInterval: time.Second,
		ReferenceTimeout:  time.Second,
		BerkeleyInterval:  5 * time.Second,
		BerkeleyEvery:     10,
		BerkeleyMinGap:    500 * time.Millisecond,
		SubReconnect:      500 * time.Millisecond,
	}
}

// berkeleyDefaults are clock.DefaultBerkeleyConfig with a tighter bound on
// a reading's round trip: a reading is off by up to half its round trip,
// so on a LAN a slow one (a server busy restarting) is left out.
func berkeleyDefaults() clock.BerkeleyConfig {
	b := clock.DefaultBerkeleyConfig()
	b.MaxRoundTrip = 100 * time.Millisecond
	return b
}

// Validate reports a config that cannot work.
func (c Config) Validate() error {
	switch {
	case c.Name == "":
		return errors.New("cluster: a server name is required")
	case c.DataDir == "":
		return errors.New("cluster: a data directory is required")
	case c.Replicas < 1:
		return errors.New("cluster: --replicas must be at least 1")
	case c.Reference != "" && c.Advertise == "":
		return errors.New("cluster: peers need an endpoint to reach this server: set --advertise (a wildcard --listen cannot be advertised)")
	case c.TickInterval <= 0 || c.PingInterval <= 0 || c.PeerTimeout <= 0 || c.ForwardTimeout <= 0 ||
		c.CommitTimeout <= 0 || c.ReadTimeout <= 0 || c.ReferenceInterval <= 0 || c.ReferenceTimeout <= 0 ||
		c.BerkeleyInterval <= 0 || c.BerkeleyMinGap <= 0 || c.SubReconnect <= 0:
		return errors.New("cluster: every interval and timeout must be positive")
	case c.BerkeleyEvery < 0:
		return errors.New("cluster: --berkeley-every must not be negative")
	}
	e := c.Election
	e.Self, e.Rank = c.Name, 1
	if err := e.Validate(); err != nil {
		return err
	}
	r := c.Replication
	r.Self, r.Replicas = c.Name, c.Replicas
	return r.Validate()
}
