//go:build !unix

package transport

// RaiseFileLimit does nothing where there is no RLIMIT_NOFILE.
func RaiseFileLimit() error { return nil }

// FileLimit reports no limit where there is no RLIMIT_NOFILE.
func FileLimit() (soft, hard uint64, err error) { return 0, 0, nil }
