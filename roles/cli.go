// Package roles wires every role of the system to the command line: one
// binary, `chat`, whose subcommand picks the role (server, broker, client,
// bot, up). The roles themselves live in the packages below this one; this
// file only turns flags and CHAT_* environment variables into their configs.
package roles

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"chat/logging"
	"chat/roles/bot"
	"chat/roles/broker"
	"chat/roles/client"
	"chat/roles/server"
	"chat/roles/up"
	"chat/transport"
)

// Exit codes of the binary, as the CLI contract fixes them.
const (
	ExitOK      = 0
	ExitFailure = 1
	ExitUsage   = 2
)

// App returns the `chat` command-line application. stdin, stdout and
// stderr are the streams the roles use (tests pass buffers).
func App(stdin io.Reader, stdout, stderr io.Writer) *cli.App {
	app := &cli.App{
		Name:    "chat",
		Usage:   "a distributed BBS/IRC-style chat: run one role of the system",
		Version: version(),
		Description: "Every process of the system is this one binary; the subcommand picks its role.\n" +
			"Every flag can also be set by an environment variable: CHAT_ + the flag name in\n" +
			"upper case with - as _ (--broker-back is CHAT_BROKER_BACK). Endpoints are ZeroMQ\n" +
			"endpoints (tcp://host:port). --log-level and --log-json may also follow the command.",
		Reader:    stdin,
		Writer:    stdout,
		ErrWriter: stderr,
		// urfave adds --help only when no command is called help: ours is.
		Flags: append(globalFlags(), cli.HelpFlag),
		Commands: []*cli.Command{upCommand(), serverCommand(), brokerCommand(), referenceCommand(), clientCommand(),
			botCommand(), statusCommand(), healthCommand(), helpCommand(), versionCommand()},
		Action:       unknownCommand,
		OnUsageError: usageError(globalFlags()),
		// Errors are printed and turned into exit codes by main, not here.
		ExitErrHandler:  func(*cli.Context, error) {},
		HideHelpCommand: true, // helpCommand replaces urfave's, which exits 3 on an unknown topic
	}
	for _, c := range app.Commands {
		c.Flags = append(c.Flags, commandGlobalFlags()...)
		c.OnUsageError = usageError(c.Flags)
		c.Before = checkEndpoints(endpointFlags[c.Name]...)
	}
	return app
}

// globalFlags are the flags of the application, given before the command:
// `chat --log-level debug server`.
func globalFlags() []cli.Flag {
	return []cli.Flag{
		boolFlag("log-json", false, "write logs as JSON lines instead of text"),
		stringFlag("log-level", "info", "lowest log level shown: debug, info, warn, error"),
	}
}

// commandGlobalFlags are the same flags given after the command:
// `chat server --log-level debug`. They read no environment variable:
// CHAT_LOG_LEVEL is read once, by the application's flag, so that a flag
// given on the command line always wins over it (see globalContext).
func commandGlobalFlags() []cli.Flag {
	return []cli.Flag{
		&cli.BoolFlag{Name: "log-json", Usage: "write logs as JSON lines instead of text"},
		&cli.StringFlag{Name: "log-level", Value: "info", Usage: "lowest log level shown: debug, info, warn, error"},
	}
}

// globalContext returns the context holding the global flag name: the
// command's when the flag was given after the command, otherwise the
// application's (the flag given before the command, its CHAT_ variable or
// its default). Every command is one level below the application.
func globalContext(c *cli.Context, name string) *cli.Context {
	if lineage := c.Lineage(); !c.IsSet(name) && len(lineage) > 1 {
		return lineage[1]
	}
	return c
}

// ExitCode maps an error returned by App().Run to the process exit code.
func ExitCode(err error) int {
	var ec cli.ExitCoder
	switch {
	case err == nil:
		return ExitOK
	case errors.As(err, &ec):
		return ec.ExitCode()
	}
	return ExitFailure
}

// usageError is the OnUsageError of a command whose flags are flags: a
// bad flag is a usage error (exit code 2). A bad CHAT_* variable is named,
// with the form its flag expects, instead of the parser's message.
func usageError(flags []cli.Flag) cli.OnUsageErrorFunc {
	return func(_ *cli.Context, err error, _ bool) error {
		if bad := badEnvironment(flags); bad != nil {
			err = bad
		}
		return cli.Exit(fmt.Sprintf("%v (see --help)", err), ExitUsage)
	}
}

// usage marks a configuration error as a usage error (exit code 2).
func usage(err error) error {
	if err == nil {
		return nil
	}
	return cli.Exit(err.Error(), ExitUsage)
}

// newLogger builds the logger the global flags ask for.
func newLogger(c *cli.Context) (*slog.Logger, error) {
	var level slog.Level
	given := globalContext(c, "log-level")
	if err := level.UnmarshalText([]byte(given.String("log-level"))); err != nil {
		return nil, usage(fmt.Errorf("--log-level %q is not a level: use debug, info, warn or error", given.String("log-level")))
	}
	json := globalContext(c, "log-json").Bool("log-json")
	log := logging.New(c.App.ErrWriter, logging.Options{JSON: json, Level: level})
	transport.SetLogger(log.With("role", "transport")) // peers refused or cut off, whichever socket
	if err := transport.RaiseFileLimit(); err != nil {
		log.Warn("could not raise the open-file limit", "err", err)
	}
	return log, nil
}

// envName is the environment variable of a flag: CHAT_ + NAME_IN_CAPS.
func envName(flag string) []string {
	return []string{"CHAT_" + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))}
}

func stringFlag(name, value, use string) *cli.StringFlag {
	return &cli.StringFlag{Name: name, Value: value, Usage: use, EnvVars: envName(name)}
}

func boolFlag(name string, value bool, use string) *cli.BoolFlag {
	return &cli.BoolFlag{Name: name, Value: value, Usage: use, EnvVars: envName(name)}
}

func intFlag(name string, value int, use string) *cli.IntFlag {
	return &cli.IntFlag{Name: name, Value: value, Usage: use, EnvVars: envName(name)}
}

func floatFlag(name string, value float64, use string) *cli.Float64Flag {
	return &cli.Float64Flag{Name: name, Value: value, Usage: use, EnvVars: envName(name)}
}

func durationFlag(name string, value time.Duration, use string) *cli.DurationFlag {
	return &cli.DurationFlag{Name: name, Value: value, Usage: use, EnvVars: envName(name)}
}

// clusterKeyFlag is --cluster-key (CHAT_CLUSTER_KEY), the same on every
// role that is, or talks to, a member of the cluster.
func clusterKeyFlag(use string) *cli.StringFlag {
	return stringFlag("cluster-key", "", use)
}

// clusterKeyUsage is what --cluster-key says on the roles of the cluster.
const clusterKeyUsage = "the cluster's secret key: only members that prove it may join (empty: the cluster runs open, any server may join)"

// list splits a comma-separated flag value.
func list(s string) []string {
	var out []string
	for _, part := range strings.Split(s, ",") {
		if part = strings.TrimSpace(part); part != "" {
			out = append(out, part)
		}
	}
	return out
}

// runUntilDone waits for ctx (SIGINT or SIGTERM) and then stops the role.
func runUntilDone(ctx context.Context, stop func() error) error {
	<-ctx.Done()
	return stop()
}

func serverCommand() *cli.Command {
	d := server.DefaultConfig("")
	return &cli.Command{
		Name:  "server",
		Usage: "run one server replica",
		Description: "A server answers client requests directly on --listen and through the broker\n" +
			"(it connects a DEALER to --broker-back), stores everything in an SQLite file under\n" +
			"--data, and publishes posts and direct messages to --broker-pub. With --reference it\n" +
			"joins the cluster: it registers for a rank, elects a coordinator with the Bully\n" +
			"algorithm, syncs its clock with Berkeley, and replicates every write (the\n" +
			"coordinator orders them; a majority of --replicas servers must hold one before it\n" +
			"is acknowledged). Peers reach it at --advertise.",
		Flags: []cli.Flag{
			stringFlag("name", "", "this server's unique name (required)"),
			stringFlag("listen", d.Listen, "endpoint of this server's own request socket"),
			stringFlag("advertise", "", "endpoint peers use to reach --listen (default: --listen)"),
			stringFlag("broker-back", d.BrokerBack, "broker's back end to serve routed requests (empty: none)"),
			stringFlag("broker-pub", d.BrokerPub, "broker's publish-in endpoint (empty: publish nowhere)"),
			stringFlag("broker-sub", "tcp://localhost:5558", "broker's publish-out, to hear coordinator announcements (empty: none)"),
			stringFlag("reference", "tcp://localhost:5559", "reference registry (empty: run alone, a cluster of one)"),
			intFlag("replicas", d.Cluster.Replicas, "servers in the cluster: a write is acknowledged once a majority of them hold it"),
			stringFlag("data", d.DataDir, "directory of the server's data file"),
			durationFlag("sync-interval", d.SyncInterval, "least time between two fsyncs of the store: writes arriving meanwhile share one (negative: no pause)"),
			durationFlag("replicated-sync-interval", d.ReplicatedSyncInterval, "the same when --replicas is over 1 (a write waits for a replication round anyway)"),
			durationFlag("clock-skew", 0, "fixed error added to this server's physical clock (demos, tests)"),
			intFlag("workers", d.Workers, "requests served concurrently"),
			durationFlag("heartbeat-interval", d.HeartbeatInterval, "how often the server tells the broker it is alive"),
			durationFlag("broker-timeout", d.BrokerTimeout, "broker silence after which the server reconnects"),
			floatFlag("rate-limit", d.RateLimit.Rate, "requests per second allowed to each direct client (0: no limit)"),
			intFlag("rate-burst", d.RateLimit.Burst, "requests a direct client may send at once above the rate"),
			durationFlag("election-timeout", d.Cluster.Election.AnswerTimeout, "Bully: wait for an OK from a higher rank before winning"),
			durationFlag("announce-timeout", d.Cluster.Election.AnnounceTimeout, "Bully: after an OK, wait for the winner's announcement before starting over"),
			durationFlag("coordinator-timeout", d.Cluster.Election.CoordinatorTimeout, "Bully: a coordinator silent this long is taken for dead"),
			durationFlag("announce-interval", d.Cluster.Election.AnnounceInterval, "Bully: how often the coordinator re-announces itself"),
			durationFlag("ping-interval", d.Cluster.PingInterval, "how often a server checks its coordinator is alive"),
			durationFlag("peer-timeout", d.Cluster.PeerTimeout, "how long a request to another server waits for its reply"),
			durationFlag("reference-interval", d.Cluster.ReferenceInterval, "how often the reference gets a heartbeat (keep it well under the reference's --server-timeout)"),
			durationFlag("commit-timeout", d.Cluster.CommitTimeout, "how long a write waits to reach a majority before the client is told to retry"),
			durationFlag("berkeley-interval", d.Cluster.BerkeleyInterval, "the coordinator syncs clocks at least this often"),
			intFlag("berkeley-every", d.Cluster.BerkeleyEvery, "... and after this many requests (0: by time only)"),
			intFlag("max-queued-per-client", d.MaxQueuedPerClient, "requests one client may have queued or being served; more are refused at once"),
			intFlag("max-queued", d.MaxQueued, "requests queued in all"),
			durationFlag("leave-timeout", d.LeaveTimeout, "on SIGTERM, how long to wait for the broker to acknowledge the goodbye"),
			intFlag("max-reply", d.Limits.MaxReply, "bytes of one reply: history pages and lists are cut to fit (more: true)"),
			boolFlag("repair-store", false, "alone (no --reference): start on a damaged store, keeping what is sound (with peers it always does)"),
			boolFlag("require-accounts", false, "refuse names not claimed with a password (login without password, publish/message/DM history as an unclaimed name)"),
			durationFlag("token-ttl", d.Accounts.TokenTTL, "how long the token of a password login is valid"),
			clusterKeyFlag(clusterKeyUsage),
		},
		Action: func(c *cli.Context) error {
			log, err := newLogger(c)
			if err != nil {
				return err
			}
			cfg := server.DefaultConfig(c.String("name"))
			cfg.Advertise = c.String("advertise")
			cfg.BrokerSub = c.String("broker-sub")
			cfg.Reference = c.String("reference")
			cfg.Cluster.Replicas = c.Int("replicas")
			cfg.Cluster.Election.AnswerTimeout = c.Duration("election-timeout")
			cfg.Cluster.Election.AnnounceTimeout = c.Duration("announce-timeout")
			cfg.Cluster.Election.CoordinatorTimeout = c.Duration("coordinator-timeout")
			cfg.Cluster.Election.AnnounceInterval = c.Duration("announce-interval")
			cfg.Cluster.PingInterval = c.Duration("ping-interval")
			cfg.Cluster.PeerTimeout = c.Duration("peer-timeout")
			cfg.Cluster.ReferenceInterval = c.Duration("reference-interval")
			cfg.Cluster.CommitTimeout = c.Duration("commit-timeout")
			cfg.Cluster.BerkeleyInterval = c.Duration("berkeley-interval")
			cfg.Cluster.BerkeleyEvery = c.Int("berkeley-every")
			cfg.MaxQueuedPerClient, cfg.MaxQueued = c.Int("max-queued-per-client"), c.Int("max-queued")
			cfg.LeaveTimeout, cfg.Limits.MaxReply = c.Duration("leave-timeout"), c.Int("max-reply")
			cfg.RepairStore = c.Bool("repair-store")
			cfg.Accounts.Require, cfg.Accounts.TokenTTL = c.Bool("require-accounts"), c.Duration("token-ttl")
			cfg.ClusterKey = c.String("cluster-key")
			cfg.Listen = c.String("listen")
			cfg.BrokerBack = c.String("broker-back")
			cfg.BrokerPub = c.String("broker-pub")
			cfg.DataDir = c.String("data")
			cfg.SyncInterval, cfg.ReplicatedSyncInterval = c.Duration("sync-interval"), c.Duration("replicated-sync-interval")
			cfg.ClockSkew = c.Duration("clock-skew")
			cfg.Workers = c.Int("workers")
			cfg.HeartbeatInterval = c.Duration("heartbeat-interval")
			cfg.BrokerTimeout = c.Duration("broker-timeout")
			cfg.RateLimit.Rate, cfg.RateLimit.Burst = c.Float64("rate-limit"), c.Int("rate-burst")
			if err := cfg.Validate(); err != nil {
				return usage(err)
			}
			srv, err := server.Start(c.Context, cfg, log)
			if err != nil {
				return err
			}
			return runUntilDone(c.Context, srv.Close)
		},
	}
}

func brokerCommand() *cli.Command {
	d := broker.DefaultConfig()
	return &cli.Command{
		Name:  "broker",
		Usage: "route client requests to servers and proxy publications",
		Description: "Clients send requests to --front; servers connect to --back; each request goes\n" +
			"to the next live server, round-robin. Servers publish to --pub-in; clients\n" +
			"subscribe on --pub-out.",
		Flags: []cli.Flag{
			stringFlag("front", d.Front, "clients' request endpoint"),
			stringFlag("back", d.Back, "servers' endpoint"),
			stringFlag("pub-in", d.PubIn, "servers publish here"),
			stringFlag("pub-out", d.PubOut, "clients subscribe here"),
			durationFlag("heartbeat-interval", d.HeartbeatInterval, "how often servers are told the broker is alive"),
			durationFlag("server-timeout", d.ServerTimeout, "silence after which a server gets no more requests"),
			durationFlag("request-timeout", d.RequestTimeout, "wait after which a request is answered with an error"),
			floatFlag("rate-limit", d.RateLimit.Rate, "requests per second allowed to each client (0: no limit)"),
			intFlag("rate-burst", d.RateLimit.Burst, "requests a client may send at once above the rate"),
			durationFlag("peer-check-interval", d.PeerCheckInterval, "how often closed server connections are looked for"),
			intFlag("max-reply", d.MaxReply, "bytes of one reply a server may send back"),
			clusterKeyFlag(clusterKeyUsage),
		},
		Action: func(c *cli.Context) error {
			log, err := newLogger(c)
			if err != nil {
				return err
			}
			cfg := d
			cfg.Front, cfg.Back, cfg.PubIn, cfg.PubOut = c.String("front"), c.String("back"), c.String("pub-in"), c.String("pub-out")
			cfg.HeartbeatInterval = c.Duration("heartbeat-interval")
			cfg.ServerTimeout = c.Duration("server-timeout")
			cfg.RequestTimeout = c.Duration("request-timeout")
			cfg.PeerCheckInterval = c.Duration("peer-check-interval")
			cfg.MaxReply = c.Int("max-reply")
			cfg.ClusterKey = c.String("cluster-key")
			cfg.RateLimit.Rate, cfg.RateLimit.Burst = c.Float64("rate-limit"), c.Int("rate-burst")
			if err := cfg.Validate(); err != nil {
				return usage(err)
			}
			b, err := broker.Start(c.Context, cfg, log)
			if err != nil {
				return err
			}
			return runUntilDone(c.Context, b.Close)
		},
	}
}

func clientCommand() *cli.Command {
	d := client.DefaultConfig()
	return &cli.Command{
		Name:  "client",
		Usage: "interactive client (reads commands from stdin; type /help)",
		Description: "An IRC-like client: /login NAME, /create CH, /join CH, then type to post.\n" +
			"It reads stdin, so it also works in a pipe. --server may list several endpoints\n" +
			"(comma-separated): when one does not answer, the next is tried.\n" +
			"On a terminal /login asks for the password, without echo (empty: an open name,\n" +
			"no account); --password-file or CHAT_PASSWORD gives it instead, for scripts.\n" +
			"A password login claims the name the first time and keeps a key pair in\n" +
			"--config-dir/keys, so that direct messages to the user are sealed end to end.",
		Flags: []cli.Flag{
			stringFlag("server", "tcp://localhost:5555", "request endpoint(s), comma-separated"),
			stringFlag("sub", "tcp://localhost:5558", "the broker's publish-out endpoint"),
			stringFlag("user", "", "log in as this user at start"),
			durationFlag("timeout", d.RequestTimeout, "how long one request attempt waits for its reply"),
			passwordFileFlag(),
			stringFlag("config-dir", "", "the client's configuration directory; key pairs go in its keys/ (empty: ~/.config/chat)"),
		},
		Action: func(c *cli.Context) error {
			log, err := newLogger(c)
			if err != nil {
				return err
			}
			cfg := client.DefaultConfig()
			cfg.Servers = list(c.String("server"))
			cfg.Sub = c.String("sub")
			cfg.User = c.String("user")
			cfg.RequestTimeout = c.Duration("timeout")
			if cfg.Password, err = password(c); err != nil {
				return err
			}
			if dir := c.String("config-dir"); dir != "" {
				cfg.KeyDir = filepath.Join(dir, "keys")
			}
			if err := cfg.Validate(); err != nil {
				return usage(err)
			}
			return client.Run(c.Context, cfg, c.App.Reader, c.App.Writer, log)
		},
	}
}

func botCommand() *cli.Command {
	d := bot.DefaultConfig()
	return &cli.Command{
		Name:  "bot",
		Usage: "automatic users, and the project's load generator",
		Description: "Each bot picks a random name, logs in, picks a random channel, sends 10\n" +
			"messages, and repeats. It prints a live stat line every few seconds and a\n" +
			"summary (sent, acknowledged, errors, p50/p99 latency) when it stops.",
		Flags: []cli.Flag{
			intFlag("count", d.Count, "bots to run in this process"),
			stringFlag("server", "tcp://localhost:5555", "request endpoint(s), comma-separated"),
			stringFlag("sub", "tcp://localhost:5558", "the broker's publish-out endpoint (empty: do not subscribe)"),
			floatFlag("rate", d.Rate, "messages per second per bot (0: as fast as replies come, for load tests)"),
			durationFlag("duration", 0, "how long to run (0: until interrupted)"),
			durationFlag("stats-every", d.StatsEvery, "period of the live stat line"),
			passwordFileFlag(),
		},
		Action: func(c *cli.Context) error {
			log, err := newLogger(c)
			if err != nil {
				return err
			}
			cfg := bot.DefaultConfig()
			cfg.Count = c.Int("count")
			cfg.Servers = list(c.String("server"))
			cfg.Sub = c.String("sub")
			cfg.Rate = c.Float64("rate")
			cfg.Duration = c.Duration("duration")
			cfg.StatsEvery = c.Duration("stats-every")
			if cfg.Password, err = password(c); err != nil {
				return err
			}
			if err := cfg.Validate(); err != nil {
				return usage(err)
			}
			_, err = bot.Run(c.Context, cfg, c.App.Writer, log)
			return err
		},
	}
}

// passwordEnv names the environment variable that holds the password of
// the client's and the bots' logins (there is no --password flag: a
// command line is visible to every user of the machine).
const passwordEnv = "CHAT_PASSWORD"

// passwordFileFlag is --password-file (CHAT_PASSWORD_FILE).
func passwordFileFlag() *cli.StringFlag {
	return stringFlag("password-file", "", "file whose first line is the password of every login (or set "+passwordEnv+"); empty: none")
}

// password returns the password of the logins: the first line of
// --password-file, or else $CHAT_PASSWORD ("" : none).
func password(c *cli.Context) (string, error) {
	if path := c.String("password-file"); path != "" {
		p, err := readPasswordFile(path)
		if err != nil {
			return "", usage(err)
		}
		return p, nil
	}
	return os.Getenv(passwordEnv), nil
}

// errEmptyPassword refuses an empty password file: it is never meant as
// "no password".
var errEmptyPassword = errors.New("the password is empty")

// readPasswordFile reads a password from the first line of the file at
// path, without its line break. An empty first line is refused.
func readPasswordFile(path string) (string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("read the password file: %w", err)
	}
	first, _, _ := strings.Cut(string(data), "\n")
	if password := strings.TrimSuffix(first, "\r"); password != "" {
		return password, nil
	}
	return "", fmt.Errorf("password file %s: %w", path, errEmptyPassword)
}

func upCommand() *cli.Command {
	return &cli.Command{
		Name:  "up",
		Usage: "run the whole topology (reference, broker, three servers) in one process",
		Description: "Starts the reference on 5559, the broker on the standard's ports (5555-5558)\n" +
			"and three replicated servers on 5561-5563, all bound to --host (127.0.0.1: this\n" +
			"machine only), each server with its data under --data/<name>, then --bots bots;\n" +
			"prints every endpoint, and runs until Ctrl-C. Every role gets the cluster key\n" +
			"(--cluster-key, or a new random one, printed with the `chat status` line that uses it).",
		Flags: []cli.Flag{
			stringFlag("data", "./data", "directory of the servers' data files"),
			intFlag("bots", 0, "bots to run in-process"),
			stringFlag("host", "127.0.0.1", "interface every role binds (0.0.0.0: all)"),
			clusterKeyFlag("the cluster's secret key (empty: a new random one, printed)"),
		},
		Action: func(c *cli.Context) error {
			log, err := newLogger(c)
			if err != nil {
				return err
			}
			if c.Args().Present() {
				return usage(fmt.Errorf("up takes no arguments (got %q); see --help", c.Args().First()))
			}
			if err := checkHost(c.String("host")); err != nil {
				return usage(err)
			}
			cfg := up.DefaultConfig(c.String("host"))
			cfg.DataDir = c.String("data")
			cfg.Bots = c.Int("bots")
			cfg.ClusterKey = c.String("cluster-key")
			if err := cfg.Validate(); err != nil {
				return usage(err)
			}
			return up.Run(c.Context, cfg, c.App.Writer, log)
		},
	}
}
