// Package up runs the whole topology in one process on localhost: the
// broker, the server(s) and, optionally, bots. It is the "one command"
// that lets a newcomer watch the system work without Docker.
package up

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"time"

	"chat/roles/bot"
	"chat/roles/broker"
	"chat/roles/server"
)

// Config configures the local topology.
type Config struct {
	DataDir string        // each server keeps its file under DataDir/<name>
	Bots    int           // bots started in-process (0: none)
	Broker  broker.Config // endpoints and timeouts of the broker
	Servers []string      // names of the servers to start
	// ServerListen gives the listen endpoint of the i-th server; each
	// server gets its own port so clients can also reach it directly.
	ServerListen func(i int) string
}

// DefaultConfig is the standard's well-known ports on localhost and one
// server listening on 5560.
func DefaultConfig() Config {
	b := broker.DefaultConfig()
	b.Front, b.Back, b.PubIn, b.PubOut = "tcp://127.0.0.1:5555", "tcp://127.0.0.1:5556", "tcp://127.0.0.1:5557", "tcp://127.0.0.1:5558"
	return Config{
		DataDir:      "./data",
		Broker:       b,
		Servers:      []string{"server-1"},
		ServerListen: func(i int) string { return fmt.Sprintf("tcp://127.0.0.1:%d", 5560+i) },
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
	return c.Broker.Validate()
}

// Run starts everything, prints every endpoint to out, and runs until ctx
// ends; then it stops everything, bots first, broker last.
func Run(ctx context.Context, cfg Config, out io.Writer, log *slog.Logger) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	b, err := broker.Start(ctx, cfg.Broker, log)
	if err != nil {
		return err
	}
	defer b.Close()
	fmt.Fprintf(out, "broker   requests %s (servers connect to %s)\n", b.FrontAddr(), b.BackAddr())
	fmt.Fprintf(out, "broker   publish in %s, subscribe on %s\n", b.PubInAddr(), b.PubOutAddr())

	for i, name := range cfg.Servers {
		sc := server.DefaultConfig(name)
		sc.Listen = cfg.ServerListen(i)
		sc.BrokerBack, sc.BrokerPub = b.BackAddr(), b.PubInAddr()
		sc.DataDir = filepath.Join(cfg.DataDir, name)
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
