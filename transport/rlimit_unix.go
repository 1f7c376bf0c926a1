//go:build unix

package transport

import (
	"fmt"
	"syscall"
)

// RaiseFileLimit raises the process's soft limit on open files
// (RLIMIT_NOFILE) to its hard limit, so that a listener runs out of file
// descriptors as late as the system allows. Every role calls it at start.
//
// The Go runtime already raises the soft limit to the hard limit minus one
// for its own process at start (and puts it back for the programs it
// starts); RaiseFileLimit makes it explicit, takes the last descriptor
// too, and keeps the raised limit for child processes. It cannot go past
// the hard limit (only root can raise that): the per-address cap and the
// idle timeout of the guarded listeners (GuardConfig) are what keep a
// flood of connections from using them all.
func RaiseFileLimit() error {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return fmt.Errorf("transport: reading the open-file limit: %w", err)
	}
	if lim.Cur >= lim.Max {
		return nil
	}
	want := lim
	want.Cur = lim.Max
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &want); err != nil {
		return fmt.Errorf("transport: raising the open-file limit from %d to %d: %w", lim.Cur, lim.Max, err)
	}
	return nil
}

// FileLimit returns the soft and hard limits on open files (for logs).
func FileLimit() (soft, hard uint64, err error) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0, 0, err
	}
	return uint64(lim.Cur), uint64(lim.Max), nil
}
