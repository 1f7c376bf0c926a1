package server

import "testing"

// A server's name is also its data files' name: one that would reach
// outside --data is refused.
func TestNameCannotLeaveTheDataDirectory(t *testing.T) {
	for _, name := range []string{"../escape", "a/b", `a\b`, ".", ".."} {
		if err := DefaultConfig(name).Validate(); err == nil {
			t.Errorf("name %q accepted", name)
		}
	}
	if err := DefaultConfig("server-1").Validate(); err != nil {
		t.Errorf("server-1: %v", err)
	}
}
