//go:build unix

package transport

import (
	"syscall"
	"testing"
)

func TestRaiseFileLimit(t *testing.T) {
	var orig syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &orig); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &orig) })
	if orig.Max <= 1100 {
		t.Skipf("hard limit %d: nothing to raise to", orig.Max)
	}
	low := orig
	low.Cur = 1100 // the broker
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &low); err != nil {
		t.Fatal(err)
	}
	if err := RaiseFileLimit(); err != nil {
		t.Fatal(err)
	}
	soft, hard, err := FileLimit()
	if err != nil || soft != uint64(orig.Max) || hard != uint64(orig.Max) {
		t.Fatalf("after RaiseFileLimit: soft %d hard %d (%v), want both %d", soft, hard, err, orig.Max)
	}
	t.Logf("soft limit raised from 1100 to %d", soft)
	if err := RaiseFileLimit(); err != nil { // at the hard limit already
		t.Fatal(err)
	}
}
