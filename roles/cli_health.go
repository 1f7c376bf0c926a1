package roles

import (
	"fmt"
	"time"

	"github.com/urfave/cli/v2"

	"chat/roles/health"
)

// healthCommand is `chat health`, the probe compose.yaml's healthchecks run
// inside the containers (they hold the static binary and no shell).
func healthCommand() *cli.Command {
	d := health.DefaultConfig()
	return &cli.Command{
		Name:  "health",
		Usage: "check that a role answers requests (exit 0) or not (exit 1)",
		Description: "Sends one request to --endpoint and exits 0 as soon as any MessagePack map comes\n" +
			"back, even an error reply (a broker with no server, a reference asked an unknown\n" +
			"service: both prove the process is serving). Exits 1 with one sentence on stderr\n" +
			"when nothing answers within --timeout. For container healthchecks:\n" +
			"  test: [\"CMD\", \"/chat\", \"health\", \"--endpoint\", \"tcp://localhost:5560\"]",
		Flags: []cli.Flag{
			stringFlag("endpoint", d.Endpoint, "request endpoint to probe: a server (5560), the broker's front (5555), the reference (5559)"),
			durationFlag("timeout", d.Timeout, "how long to wait for the reply, connecting included"),
		},
		Action: func(c *cli.Context) error {
			cfg := health.Config{Endpoint: c.String("endpoint"), Timeout: c.Duration("timeout")}
			if err := cfg.Validate(); err != nil {
				return usage(err)
			}
			res, err := health.Check(c.Context, cfg)
			if err != nil {
				return cli.Exit(err.Error(), ExitFailure)
			}
			fmt.Fprintf(c.App.Writer, "%s answered in %v\n", res.Endpoint, res.Latency.Round(100*time.Microsecond))
			return nil
		},
	}
}
