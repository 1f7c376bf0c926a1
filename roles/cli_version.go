package roles

import (
	"fmt"
	"runtime/debug"

	"github.com/urfave/cli/v2"
)

// Version is the version `chat version` and `chat --version` print. A
// release sets it when building:
//
//	go build -ldflags "-X chat/roles.Version=1.2.0" -o chat .
//
// Left at "dev", the version recorded by the Go toolchain is used when
// there is one (the module version with `go install`, the commit with
// `go build` in a git checkout).
var Version = "dev"

// version returns Version, or what the build recorded when Version was
// not set.
func version() string {
	if Version != "dev" {
		return Version
	}
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return Version
	}
	if v := info.Main.Version; v != "" && v != "(devel)" {
		return v
	}
	for _, s := range info.Settings {
		if s.Key == "vcs.revision" && len(s.Value) >= 12 {
			return "dev-" + s.Value[:12]
		}
	}
	return Version
}

// versionCommand is `chat version`, the same as `chat --version`.
func versionCommand() *cli.Command {
	return &cli.Command{
		Name:  "version",
		Usage: "print the version of this binary",
		Action: func(c *cli.Context) error {
			if c.Args().Present() {
				return usage(fmt.Errorf("version takes no arguments (got %q)", c.Args().First()))
			}
			fmt.Fprintf(c.App.Writer, "%s version %s\n", c.App.Name, c.App.Version)
			return nil
		},
	}
}
