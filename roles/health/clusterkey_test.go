package health

import (
	"context"
	"testing"
	"time"

	"chat/roles/reference"
)

// chat health needs no cluster key: a keyed reference refuses its probe
// with an erro, and any reply proves the process is serving.
func TestHealthOfAKeyedRole(t *testing.T) {
	cfg := reference.DefaultConfig()
	cfg.Listen, cfg.DataDir = "tcp://127.0.0.1:0", t.TempDir()
	cfg.ClusterKey = "health-test-cluster-key-0123456789"
	r, err := reference.Start(context.Background(), cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if _, err := Check(context.Background(), Config{Endpoint: r.Addr(), Timeout: 5 * time.Second}); err != nil {
		t.Fatalf("chat health of a keyed reference: %v", err)
	}
}
