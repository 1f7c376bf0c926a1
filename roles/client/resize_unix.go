//go:build unix

package client

import (
	"os"
	"os/signal"
	"syscall"
)

// onResize calls f, in a goroutine of its own, each time the terminal
// window changes size (SIGWINCH). The returned function stops it and waits
// for the goroutine.
func onResize(f func()) (stop func()) {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGWINCH)
	done, quit := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-sig:
				f()
			case <-quit:
				return
			}
		}
	}()
	return func() {
		signal.Stop(sig)
		close(quit)
		<-done
	}
}
