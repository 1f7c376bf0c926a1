package server

import (
	"testing"
	"time"
)

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

// The store of a replicating server gathers writes longer before an fsync
// than that of a server alone, or of a cluster of one.
func TestStoreSyncInterval(t *testing.T) {
	cfg := DefaultConfig("server-1")
	cfg.SyncInterval, cfg.ReplicatedSyncInterval = 111, 333
	for _, c := range []struct {
		reference string
		replicas  int
		want      time.Duration
	}{
		{"", 3, 111}, // alone: the cluster counts one replica, whatever --replicas says
		{"tcp://localhost:5559", 1, 111},
		{"tcp://localhost:5559", 3, 333},
	} {
		cfg.Reference, cfg.Cluster.Replicas = c.reference, c.replicas
		if got := cfg.storeConfig().SyncInterval; got != c.want {
			t.Errorf("reference %q, %d replicas: SyncInterval %v, want %v", c.reference, c.replicas, got, c.want)
		}
	}
}
