// Package up runs the whole topology in one process on localhost: the
// reference, the broker, three servers and, optionally, bots. It is the "one command"
// that lets a newcomer watch the system work without Docker.
package up

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"strconv"
	"time"

	"chat/clusterauth"
	"chat/roles/bot"
	"chat/roles/broker"
	"chat/roles/reference"
	"chat/roles/server"
)

// Config configures the local topology.
type Config struct {
	DataDir   string           // each server keeps its file under DataDir/<name>, the reference under DataDir/reference
	Bots      int              // bots started in-process (0: none)
	Broker    broker.Config    // endpoints and timeouts of the broker
	Reference reference.Config // endpoint and timeout of the reference
	Servers   []string         // names of the servers to start
	// ServerListen gives the listen endpoint of the i-th server; each
	// server gets its own port so clients can also reach it directly.
	ServerListen func(i int) string
	// ClusterKey is the cluster's key, given to every role; empty: Run
	// makes a new random one and prints it (a local cluster is never
	// open: other groups' servers on the same network cannot join it).
	ClusterKey string
}

// DefaultConfig is the standard's well-known ports on host (127.0.0.1
// unless told otherwise): the broker on 5555-5558, the reference on 5559,
// and three servers on 5561-5563.
func DefaultConfig(host string) Config {
	ep := func(port int) string { return "tcp://" + net.JoinHostPort(host, strconv.Itoa(port)) }
	b := broker.DefaultConfig()
	b.Front, b.Back, b.PubIn, b.PubOut = ep(5555), ep(5556), ep(5557), ep(5558)
	r := reference.DefaultConfig()
	r.Listen = ep(5559)
	return Config{
		DataDir:      "./data",
		Broker:       b,
		Reference:    r,
		Servers:      []string{"server-1", "server-2", "server-3"},
		ServerListen: func(i int) string { return ep(5561 + i) },
	}
}

// Validate reports a config that cannot work.
func (c Config) Validate() error {
	switch {
	case c.DataDir == "":
		return errors.New("up: a data directory is required (--data)")
	case c.Bots < 0:
		return errors.New("up: --bots must not be negative")
	case len(c.Servers) == 0:
		return errors.New("up: at least one server is needed")
	}
	if _, err := clusterauth.ForKey(c.ClusterKey, clusterauth.Config{}); err != nil {
		return fmt.Errorf("up: --cluster-key: %w", err)
	}
	return c.Broker.Validate()
}

// Run starts everything, prints every endpoint to out, and runs until ctx
// ends; then it stops everything, bots first, broker last.
func Run(ctx context.Context, cfg Config, out io.Writer, log *slog.Logger) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	key := cfg.ClusterKey
	if key == "" {
		key = clusterauth.GenerateSecret()
	}
	rc := cfg.Reference
	rc.DataDir = filepath.Join(cfg.DataDir, "reference")
	rc.ClusterKey = key
	ref, err := reference.Start(ctx, rc, log)
	if err != nil {
		return err
	}
	defer ref.Close()
	fmt.Fprintf(out, "reference %s\n", ref.Addr())
	bc := cfg.Broker
	bc.ClusterKey = key
	b, err := broker.Start(ctx, bc, log)
	if err != nil {
		return err
	}
	defer b.Close()
	fmt.Fprintf(out, "broker   requests %s (servers connect to %s)\n", b.FrontAddr(), b.BackAddr())
	fmt.Fprintf(out, "broker   publish in %s, subscribe on %s\n", b.PubInAddr(), b.PubOutAddr())

	for i, name := range cfg.Servers {
		sc := server.DefaultConfig(name)
		sc.Listen = cfg.ServerListen(i)
		sc.BrokerBack, sc.BrokerPub, sc.BrokerSub = b.BackAddr(), b.PubInAddr(), b.PubOutAddr()
		sc.Reference = ref.Addr()
		sc.Cluster.Replicas = len(cfg.Servers)
		sc.DataDir = filepath.Join(cfg.DataDir, name)
		sc.ClusterKey = key
		srv, err := server.Start(ctx, sc, log)
		if err != nil {
			return err
		}
		defer srv.Close()
		fmt.Fprintf(out, "%-8s direct requests %s, data in %s\n", name, srv.Addr(), sc.DataDir)
	}
	for len(b.LiveServers()) < len(cfg.Servers) && ctx.Err() == nil { // until the broker routes to them all
		select {
		case <-ctx.Done():
		case <-time.After(20 * time.Millisecond):
		}
	}
	fmt.Fprintf(out, "try:     chat client --server %s --sub %s\n", b.FrontAddr(), b.PubOutAddr())
	shown := "<the key given>"
	if cfg.ClusterKey == "" {
		shown = key
		fmt.Fprintf(out, "cluster key (new, random: every member, and chat status, needs it): %s\n", key)
	}
	fmt.Fprintf(out, "status:  chat status --reference %s --cluster-key %s\n", ref.Addr(), shown)
	fmt.Fprintln(out, "Ctrl-C stops everything.")

	if cfg.Bots > 0 {
		bc := bot.DefaultConfig()
		bc.Count = cfg.Bots
		bc.Servers = []string{b.FrontAddr()}
		bc.Sub = b.PubOutAddr()
		if _, err := bot.Run(ctx, bc, out, log); err != nil && ctx.Err() == nil {
			return err
		}
	}
	<-ctx.Done()
	return nil
}
