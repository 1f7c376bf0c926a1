package bot

import (
	"strings"
	"testing"
	"time"

	"chat/account"
	"chat/clock"
	"chat/internal/clustertest"
	"chat/proto"
	"chat/roles/client"
	"chat/roles/server"
	"chat/transport"
)

// Issue 11: with a password, each bot claims its name and posts with the
// token of its login; nobody else can post as it.
func TestBotsWithAPasswordClaimTheirNames(t *testing.T) {
	c := clustertest.StartWith(t, 1, clustertest.BrokerConfig(), func(cfg *server.Config) {
		cfg.Accounts.Hash = account.HashConfig{Time: 1, Memory: 8, Threads: 1}
	})
	cfg := DefaultConfig()
	cfg.Count, cfg.Servers, cfg.Sub = 2, []string{c.Broker.FrontAddr()}, ""
	cfg.Rate, cfg.Duration, cfg.Password = 20, time.Second, "bots-pw"
	sum, err := Run(t.Context(), cfg, &clustertest.Output{}, clustertest.Log())
	if err != nil {
		t.Fatal(err)
	}
	if sum.Acked == 0 || sum.Errors != 0 {
		t.Fatalf("want acked > 0 and no errors, got %v", sum)
	}

	req, err := transport.NewClient(transport.DefaultClientConfig(c.Servers[0].Addr()), clustertest.Log())
	if err != nil {
		t.Fatal(err)
	}
	defer req.Close()
	var lamport clock.Lamport
	users, err := client.Call(t.Context(), req, &lamport, proto.Users, proto.Data{})
	if err != nil {
		t.Fatal(err)
	}
	names := client.ReplyList(users, "users")
	if len(names) != cfg.Count {
		t.Fatalf("users = %q, want %d bots", names, cfg.Count)
	}
	for _, name := range names {
		who, err := client.Call(t.Context(), req, &lamport, proto.Whois, proto.Data{"user": name})
		if err != nil || who["claimed"] != true {
			t.Errorf("whois %s = %v, %v: the bot did not claim its name", name, who, err)
		}
		_, err = client.Call(t.Context(), req, &lamport, proto.Publish, proto.Data{"user": name, "channel": "x", "message": "forged"})
		if err == nil || !strings.Contains(err.Error(), "protected by a password") {
			t.Errorf("a post as %s without its token: %v", name, err)
		}
	}
}
