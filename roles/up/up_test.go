package up

import (
	"context"
	"regexp"
	"testing"
	"time"

	"chat/internal/poll"
	"chat/roles/status"
)

// chat up makes a cluster key when none is given, gives it to every role,
// and prints the chat status line that uses it: that line works, and
// without the key the reference refuses.
func TestUpMakesAClusterKey(t *testing.T) {
	cfg := DefaultConfig("127.0.0.1")
	cfg.DataDir = t.TempDir()
	cfg.Broker.Front, cfg.Broker.Back, cfg.Broker.PubIn, cfg.Broker.PubOut = "tcp://127.0.0.1:0", "tcp://127.0.0.1:0", "tcp://127.0.0.1:0", "tcp://127.0.0.1:0"
	cfg.Reference.Listen = "tcp://127.0.0.1:0"
	cfg.ServerListen = func(int) string { return "tcp://127.0.0.1:0" }
	ctx, cancel := context.WithCancel(context.Background())
	out := &poll.Output{}
	done := make(chan error, 1)
	go func() { done <- Run(ctx, cfg, out, nil) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	line := regexp.MustCompile(`status:  chat status --reference (\S+) --cluster-key (\S+)`)
	poll.WaitFor(t, 20*time.Second, "chat up to print the status line", func() bool { return line.MatchString(out.String()) })
	m := line.FindStringSubmatch(out.String())
	if !regexp.MustCompile(`cluster key \(new, random.*\): ` + regexp.QuoteMeta(m[2])).MatchString(out.String()) {
		t.Fatalf("the generated key is not printed:\n%s", out)
	}
	sc := status.DefaultConfig()
	sc.Reference, sc.ClusterKey = m[1], m[2]
	poll.WaitFor(t, 20*time.Second, "chat status with the printed key to show the three servers", func() bool {
		rep, err := status.Snapshot(context.Background(), sc)
		ours := 0
		for _, s := range rep.Servers {
			if s.Ours {
				ours++
			}
		}
		return err == nil && ours == 3
	})
	sc.ClusterKey = ""
	if _, err := status.Snapshot(context.Background(), sc); err == nil {
		t.Fatal("chat status without the key got an answer from the keyed reference")
	}
}
