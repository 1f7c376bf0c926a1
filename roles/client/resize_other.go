//go:build !unix

package client

// onResize does nothing where there is no SIGWINCH: the line editor keeps
// the width it was opened with.
func onResize(func()) (stop func()) { return func() {} }
