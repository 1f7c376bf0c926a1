package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	"chat/internal/clustertest"
	"chat/proto"
	"chat/ratelimit"
	"chat/roles/broker"
	"chat/roles/server"
)

// TestFloodingClientIsLimitedOthersAreNot floods a server directly and
// through the broker from one client: past its burst the flood gets "rate
// limit" errors, while another client is served normally.
func TestFloodingClientIsLimitedOthersAreNot(t *testing.T) {
	limit := ratelimit.Config{Rate: 20, Burst: 10, Idle: time.Minute}
	bc := clustertest.BrokerConfig()
	bc.RateLimit = limit
	b, err := broker.Start(context.Background(), bc, clustertest.Log())
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	sc := clustertest.ServerConfig(t, "s1", b)
	sc.RateLimit = limit
	s, err := server.Start(context.Background(), sc, clustertest.Log())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	clustertest.WaitFor(t, 5*time.Second, "the server to join", func() bool { return len(b.LiveServers()) == 1 })

	for _, ep := range []string{s.Addr(), b.FrontAddr()} {
		flood, calm := newClient(t, ep), newClient(t, ep)
		limited, start := 0, time.Now()
		for range 60 {
			d := call(t, flood, proto.Users, nil)
			if desc, _ := d["description"].(string); d["status"] == proto.StatusError && strings.Contains(desc, "rate limit") {
				limited++
			}
		}
		// At most the burst plus what the rate refilled may pass.
		allowed := float64(limit.Burst) + limit.Rate*time.Since(start).Seconds() + 1
		if float64(60-limited) > allowed {
			t.Errorf("via %s: %d of 60 flooding requests passed, the limit allows %.0f", ep, 60-limited, allowed)
		}
		if d := call(t, calm, proto.Login, proto.Data{"user": "calm"}); d["status"] != proto.StatusSuccess {
			t.Errorf("via %s: a calm client was refused: %v", ep, d)
		}
	}
}
