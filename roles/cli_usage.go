package roles

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"chat/transport"
)

// endpointFlags lists, per command, the flags that hold endpoints. Each is
// checked before the command starts (checkEndpoints): a value not written
// tcp://host:port is a usage error at once, not a role that retries a
// connection forever. An empty value is left to the role (for some flags
// it means "none").
var endpointFlags = map[string][]string{
	"server":    {"listen", "advertise", "broker-back", "broker-pub", "broker-sub", "reference"},
	"broker":    {"front", "back", "pub-in", "pub-out"},
	"reference": {"listen"},
	"client":    {"server", "sub"},
	"bot":       {"server", "sub"},
	"status":    {"reference"},
	"health":    {"endpoint"},
}

// checkEndpoints returns a command's Before: it refuses, as a usage error,
// any of the flags named whose value (or one of whose comma-separated
// values) is not an endpoint.
func checkEndpoints(flags ...string) cli.BeforeFunc {
	return func(c *cli.Context) error {
		for _, name := range flags {
			for _, ep := range list(c.String(name)) {
				if err := transport.CheckEndpoint(ep); err != nil {
					return usage(fmt.Errorf("%s: %v", flagSource(c, name), err))
				}
			}
		}
		return nil
	}
}

// flagSource names where the value of flag name may have come from:
// "--name", or "CHAT_NAME (--name)" when the environment variable holds
// that very value.
func flagSource(c *cli.Context, name string) string {
	env := envName(name)[0]
	if v, ok := os.LookupEnv(env); ok && v == c.String(name) {
		return env + " (--" + name + ")"
	}
	return "--" + name
}

// checkHost reports a --host that is not a host name or an IP address
// (an IPv6 address is written bare: ::1).
func checkHost(host string) error {
	ok := host != "" && !strings.ContainsAny(host, "/[] ") && (!strings.Contains(host, ":") || net.ParseIP(host) != nil)
	if !ok {
		return fmt.Errorf("--host %q is not a host: write a name or an address, such as 127.0.0.1, 0.0.0.0 or localhost", host)
	}
	return nil
}

// helpCommand is `chat help [COMMAND]`, the same as `chat [COMMAND] --help`.
// An unknown command is a usage error (urfave's own help command exits 3).
func helpCommand() *cli.Command {
	return &cli.Command{
		Name:      "help",
		Usage:     "show the commands, or one command's flags",
		ArgsUsage: "[COMMAND]",
		Action: func(c *cli.Context) error {
			name := c.Args().First()
			switch {
			case c.Args().Len() > 1:
				return usage(fmt.Errorf("help takes one command at most (got %q)", strings.Join(c.Args().Slice(), " ")))
			case name == "":
				return cli.ShowAppHelp(c)
			case c.App.Command(name) == nil:
				return unknown(c, name)
			}
			return cli.ShowCommandHelp(c.Lineage()[1], name) // the application's context: its commands
		},
	}
}

// unknownCommand is the application's Action, run when the first argument
// is not a command: a usage error. With no argument at all it shows the
// help.
func unknownCommand(c *cli.Context) error {
	if !c.Args().Present() {
		return cli.ShowAppHelp(c)
	}
	return unknown(c, c.Args().First())
}

// unknown is the usage error for a command name that does not exist.
func unknown(c *cli.Context, name string) error {
	var names []string
	for _, cmd := range c.App.Commands {
		names = append(names, cmd.Name)
	}
	return usage(fmt.Errorf("there is no command %q: the commands are %s (see chat help)", name, strings.Join(names, ", ")))
}

// badEnvironment returns, for the first CHAT_* variable of flags whose
// value its flag cannot take, one sentence naming the variable and the form
// expected; nil when every variable set is fine.
func badEnvironment(flags []cli.Flag) error {
	for _, f := range flags {
		var vars []string
		var parse func(string) error
		var form string
		switch f := f.(type) {
		case *cli.IntFlag:
			vars, form = f.EnvVars, "a whole number, such as 10"
			parse = func(v string) error { _, err := strconv.ParseInt(v, 0, 64); return err }
		case *cli.Float64Flag:
			vars, form = f.EnvVars, "a number, such as 2.5"
			parse = func(v string) error { _, err := strconv.ParseFloat(v, 64); return err }
		case *cli.DurationFlag:
			vars, form = f.EnvVars, "a duration with its unit, such as 500ms, 3s or 1m"
			parse = func(v string) error { _, err := time.ParseDuration(v); return err }
		case *cli.BoolFlag:
			vars, form = f.EnvVars, "true or false"
			parse = func(v string) error { _, err := strconv.ParseBool(v); return err }
		default:
			continue // strings take any value
		}
		for _, name := range vars {
			if v, ok := os.LookupEnv(name); ok && v != "" && parse(strings.TrimSpace(v)) != nil {
				return fmt.Errorf("%s=%q is not valid: it sets --%s, which takes %s", name, v, f.Names()[0], form)
			}
		}
	}
	return nil
}
