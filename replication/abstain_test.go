package replication

import (
	"testing"
	"time"
)

// A node told to abstain (its store was repaired and lost entries it had)
// neither campaigns nor promises until its log is back where it was.
func TestAbstainUntilTheLogIsBack(t *testing.T) {
	log := newMemLog()
	log.addEntry(1, "a")
	n := New(DefaultConfig("s1", 3), log, Promise{})
	n.Abstain(3)
	now := time.Unix(0, 0)

	n.Campaign(now)
	if n.Role() != Follower || len(n.Outbox()) != 0 {
		t.Fatalf("an abstaining node campaigned: role %v", n.Role())
	}
	if r := n.HandlePrepare(Prepare{Epoch: 5, Leader: "s2"}); r.OK {
		t.Fatal("an abstaining node promised an epoch")
	}
	log.addEntry(1, "b")
	log.addEntry(1, "c") // back to LSN 3
	if r := n.HandlePrepare(Prepare{Epoch: 5, Leader: "s2"}); !r.OK {
		t.Fatal("a node whose log is back still refuses to promise")
	}
}
