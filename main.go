// Command chat is every process of the chat system: `chat server`,
// `chat broker`, `chat client`, `chat bot`, and `chat up` to run the whole
// topology on localhost. See README.md.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"chat/roles"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := roles.App(os.Stdin, os.Stdout, os.Stderr).RunContext(ctx, os.Args)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "chat:", err)
	}
	os.Exit(roles.ExitCode(err))
}
