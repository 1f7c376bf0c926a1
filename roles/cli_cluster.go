package roles

import (
	"github.com/urfave/cli/v2"

	"chat/roles/reference"
	"chat/roles/status"
)

// referenceCommand is `chat reference`: the registry of servers.
func referenceCommand() *cli.Command {
	d := reference.DefaultConfig()
	return &cli.Command{
		Name:  "reference",
		Usage: "run the reference: the registry that gives servers their ranks and lists the live ones",
		Description: "The reference is the one process every server knows in advance (port 5559).\n" +
			"A server that starts asks it for a rank (service rank): a number unique to its\n" +
			"name, which it keeps forever, across restarts of the server and of the reference,\n" +
			"because the reference writes it to --data/reference.db before answering. Then the\n" +
			"server sends a heartbeat every second or so; one silent for --server-timeout\n" +
			"leaves the list of live servers (service list), which servers use to find their\n" +
			"peers and to elect a coordinator.\n" +
			"Open the file with the sqlite3 tool to see every name and its rank.",
		Flags: []cli.Flag{
			stringFlag("listen", d.Listen, "endpoint of the reference's request socket"),
			stringFlag("data", d.DataDir, "directory of reference.db, the names and ranks"),
			durationFlag("server-timeout", d.ServerTimeout, "silence after which a server leaves the list"),
			clusterKeyFlag(clusterKeyUsage),
		},
		Action: func(c *cli.Context) error {
			log, err := newLogger(c)
			if err != nil {
				return err
			}
			cfg := reference.DefaultConfig()
			cfg.Listen = c.String("listen")
			cfg.DataDir = c.String("data")
			cfg.ServerTimeout = c.Duration("server-timeout")
			cfg.ClusterKey = c.String("cluster-key")
			cfg.CheckInterval = min(cfg.CheckInterval, cfg.ServerTimeout)
			if err := cfg.Validate(); err != nil {
				return usage(err)
			}
			r, err := reference.Start(c.Context, cfg, log)
			if err != nil {
				return err
			}
			return runUntilDone(c.Context, r.Close)
		},
	}
}

// statusCommand is `chat status`: one screen with every server.
func statusCommand() *cli.Command {
	d := status.DefaultConfig()
	return &cli.Command{
		Name:  "status",
		Usage: "show every server: rank, role, coordinator, clocks, messages stored",
		Description: "Asks the reference (--reference) which servers are alive, then asks each of them\n" +
			"directly, at the address it registered, for its status, and prints one table:\n" +
			"name, rank, address, whether it answers, its role (leader, follower, candidate,\n" +
			"alone), the coordinator it follows (* marks it), its election epoch, its clock\n" +
			"offset in ms (Berkeley synchronisation), its Lamport clock, the messages it\n" +
			"stores and its last log positions (LSN, COMMIT). A line says so when servers\n" +
			"disagree on the coordinator; '-' is a value not asked or not answered, '?' one\n" +
			"an answering server did not give (servers written by others may not know status).\n" +
			"--watch redraws it every --interval until Ctrl-C. Exit code 1 when the reference\n" +
			"or every server fails to answer (the last snapshot's, with --watch).",
		Flags: []cli.Flag{
			stringFlag("reference", d.Reference, "the reference's endpoint"),
			boolFlag("watch", false, "redraw every --interval until interrupted"),
			durationFlag("interval", d.Interval, "period of the redraw with --watch"),
			durationFlag("timeout", d.ServerTimeout, "how long each server is given to answer"),
			clusterKeyFlag("the cluster's key, when it has one (its reference and servers answer members only)"),
		},
		Action: func(c *cli.Context) error {
			if _, err := newLogger(c); err != nil {
				return err
			}
			cfg := status.DefaultConfig()
			cfg.Reference = c.String("reference")
			cfg.Watch = c.Bool("watch")
			cfg.Interval = c.Duration("interval")
			cfg.ServerTimeout = c.Duration("timeout")
			cfg.ClusterKey = c.String("cluster-key")
			if err := cfg.Validate(); err != nil {
				return usage(err)
			}
			return status.Run(c.Context, cfg, c.App.Writer)
		},
	}
}
